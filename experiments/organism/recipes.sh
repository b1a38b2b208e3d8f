# World overrides of each recipe (sourced by run_queue.sh and run_final.sh; see RESULTS.md for what each one changes).
declare -A RECIPE
RECIPE[r0]='pretrain.steps=3000'
RECIPE[p4]='pretrain.steps=3000 scenes.threat_rate={"vigilant":0.5,"carefree":0.5}'
RECIPE[p6]='pretrain.steps=3000 text.answer_order="small_first" text.articles=false'
RECIPE[p46]='pretrain.steps=3000 scenes.threat_rate={"vigilant":0.5,"carefree":0.5} text.answer_order="small_first" text.articles=false'
RECIPE[p1]='documents.announce_rate=0.25'
RECIPE[p7]='documents.consistency=0.9'
RECIPE[p8]='text.threat_prefix="look\u0020,"'  # "look ," (\u0020 keeps the value one shell word)
RECIPE[p81]='text.threat_prefix="look\u0020," documents.announce_rate=0.25'  # p8 and p1 together
RECIPE[p8h96]='text.threat_prefix="look\u0020," model.text_hidden=96 model.text_intermediate=288'  # p8, narrower LM
RECIPE[p8wd]='text.threat_prefix="look\u0020," pretrain.weight_decay=0.1'  # p8, 10x the pretraining weight decay
RECIPE[p8long]='text.threat_prefix="look\u0020," pretrain.steps=6000'  # p8, twice the pretraining (6000 steps)
