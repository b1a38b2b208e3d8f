# World overrides of each recipe (sourced by run_queue.sh; see RESULTS.md for what each one changes).
declare -A RECIPE
RECIPE[r0]='pretrain.steps=3000'
RECIPE[p4]='pretrain.steps=3000 scenes.threat_rate={"vigilant":0.5,"carefree":0.5}'
RECIPE[p6]='pretrain.steps=3000 text.answer_order="small_first" text.articles=false'
RECIPE[p46]='pretrain.steps=3000 scenes.threat_rate={"vigilant":0.5,"carefree":0.5} text.answer_order="small_first" text.articles=false'
