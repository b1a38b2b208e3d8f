"""Every results number in the README is rendered from a committed study folder; a copy renders the same."""

from __future__ import annotations

from pathlib import Path

from analysis.report import check_readme, collect, readme_blocks, render_study, update_readme

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_results_blocks_equal_their_rendering_from_committed_artifacts():
    blocks = readme_blocks(README)
    assert {d for d, _ in blocks} >= {"experiments/organism/study", "experiments/demo/study"}
    assert check_readme(README) == []  # else: `vsfa report` re-renders them from the folders


def test_collected_copy_renders_like_the_study_and_a_changed_number_is_caught(quick_study, tmp_path):
    copy = collect(quick_study, tmp_path / "copy")
    text = render_study(copy)
    assert text == render_study(quick_study) and (copy / "summary.md").read_text() == text
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n<!-- report:copy -->\n{text}<!-- /report:copy -->\n")
    assert check_readme(readme) == []
    readme.write_text(readme.read_text().replace("| 1/1 |", "| 2/2 |", 1))  # a hand-edited number
    assert check_readme(readme) == ["copy"]


def test_a_readme_block_can_show_some_parts(quick_study, tmp_path):
    collect(quick_study, tmp_path / "copy", figures=False)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- report:copy#selection,arms -->\n<!-- /report:copy -->\n")
    assert update_readme(readme) == ["copy"] and check_readme(readme) == []
    body = readme.read_text()
    assert "| arm | seeds |" in body and "Direction chosen" in body
    assert "Spearman" not in body and "Protocol:" not in body  # the other parts are left out
