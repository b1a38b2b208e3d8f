"""`vsfa track` over checkpoints: the base is read once, activations equal per-checkpoint loading."""

from __future__ import annotations

import torch

from analysis.trajectory import TrackConfig, read_trajectory, track
from probes.capture import Capturer, CaptureSpec, ModelSpec
from probes.contrasts import load_set
from probes.stages import base_directions
from tests.vsfa.models.test_adapter_switch import count_base_reads, make_sweep_run


def test_track_reads_the_base_once_and_captures_as_one_load_per_checkpoint(tiny_model, tmp_path, monkeypatch):
    base = tiny_model("llava")
    run = make_sweep_run(tmp_path, base)
    cfg = TrackConfig(
        run=run, sets=["requests"], max_pairs=2, max_questions=2, n_boot=20, n_random=2, batch_size=4
    )
    acts = run / "acts"
    dset = base_directions(base, cfg, acts)  # derived first: track itself then only captures
    reads = count_base_reads(monkeypatch)
    track(cfg)
    assert len(reads) == 1  # base, three checkpoints and the attribution captures: one read of the base
    assert sorted(set(read_trajectory(run)["step"])) == [0, 1, 2, 3]
    assert (run / "track" / "attribution.csv").is_file()

    cspec = CaptureSpec.from_dict(dset.meta["capture"])
    sets = [load_set("requests", max_pairs=2)]
    for adapter in sorted((run / "checkpoints").glob("step-00000[1-3]")):
        spec = ModelSpec(str(base), str(adapter))
        for cset in sets:
            swept = Capturer(spec, acts).capture(cset, cspec)  # a cache hit: what track captured
            fresh = Capturer(spec, tmp_path / "fresh").capture(cset, cspec)  # loads base + adapter anew
            assert fresh.folder.is_relative_to(tmp_path / "fresh")
            for hook in swept.hooks:
                for position in swept.positions:
                    assert torch.equal(
                        torch.as_tensor(swept.load(hook, position)),
                        torch.as_tensor(fresh.load(hook, position)),
                    )
