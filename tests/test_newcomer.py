"""What a newcomer meets first: a README that fits on a page, whose setup is what CI installs and whose commands
say what they wrote; learned-prompt rows named as such."""
import os
import re

from conftest import ROOT


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_fits_on_a_page_and_its_links_resolve():
    text = readme()
    assert len(text.encode()) <= 12 * 1024
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert os.path.exists(os.path.join(ROOT, target)), target


def test_ci_installs_what_readme_setup_installs_and_runs_its_test_command():
    text = readme()
    setup = re.search(r"## Setup\n\n```sh\n(.*?)```", text, re.S).group(1)
    tests = re.search(r"## Tests\n\n```sh\n(.*?)```", text, re.S).group(1)
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    for line in setup.splitlines():
        command = line.split("  #")[0].strip()
        if command.startswith("pip install"):
            assert command.replace("pip install", "python -m pip install --quiet --disable-pip-version-check") in ci
        else:  # apt-get, quietened
            assert "apt-get update" in command and "apt-get install -y -qq chromium" in ci, command
    assert tests.strip() in ci


def test_predict_names_the_files_it_wrote(checkpoint, tmp_path, capsys):
    import predict
    predict.main([os.path.join(ROOT, "examples", "synthetic_room.jpg"), "--clip_model", checkpoint, "-o",
                  str(tmp_path), "--npy", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.startswith("1 depth map(s) written to")
    for name in sorted(os.listdir(tmp_path)):
        assert name in out


def test_a_learned_prompts_row_is_named_as_such(checkpoint, nyu_like, tmp_path, capsys):
    import torch

    import eval as evaluation
    from learned_prompts import LearnedPrompts, bin_centres
    path = tmp_path / "mine.safetensors"
    LearnedPrompts("learned-static-1o1d", 7, "object", bin_centres("dset-even-7"),
                   {"prompt": torch.zeros(2, 64), "depth": torch.randn(7, 64)}, depth_range=(0.001, 10.0)).save(str(path))
    evaluation.main(["--clip_model", checkpoint, "--data_path", nyu_like, "--testfile_nyu", "auto", "--device", "cpu",
                     "--prompts", str(path), "--limit", "1"])
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].startswith("learned:mine.safetensors"), rows
