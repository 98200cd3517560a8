"""Flags and configuration files are checked before any work: every flag that takes a number has a range checked at
parse time (one line naming the flag), their params YAML is read key by key (a misspelt key is named with the
nearest known one), and an optional package a flag needs is asked for at start with its install command."""
import argparse
import importlib
import os

import pytest
import yaml

import cli
import options
import protocols
import train_scale
from datasets import kitti
from test_errors import documented
from test_train import error_line

PARSERS = {  # each script's parser and the fewest arguments it parses
    "eval.py": (options.eval_options, []),
    "predict.py": (options.predict_options, ["photo.jpg"]),
    "bench.py": (options.bench_options, []),
    "demo.py": (options.demo_options, []),
    "train.py": (options.train_options, ["--output", "x.safetensors"]),
    "train_scale.py": (train_scale.train_scale_options, ["--output", "x.safetensors"]),
}
GENERATORS = ["synthetic.checkpoint", "synthetic.nyu_like", "synthetic.kitti_like", "synthetic.taught",
              "synthetic.zeroshot_like", "synthetic.auty_checkpoint"]


def number_flags(parser):
    """The parser's actions that take a number: by their type, or by a numeric default."""
    return [action for action in parser._actions if action.option_strings and not isinstance(action.default, bool)
            and (action.type in (int, float) or getattr(action.type, "__name__", "").startswith(("an integer",
                                                                                                 "a number"))
                 or (action.type is None and isinstance(action.default, (int, float))))]


def generator_parser(module_name, monkeypatch):
    """The argparse parser a generator's main builds (caught as it parses --help)."""
    built = []
    original = argparse.ArgumentParser.parse_args

    def catch(self, *args, **kwargs):
        built.append(self)
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        importlib.import_module(module_name).main([])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original)
    return built[0]


@pytest.mark.parametrize("script", list(PARSERS))
def test_every_number_flag_has_a_range_checked_at_parse_time(script, capsys):
    make, minimal = PARSERS[script]
    flags = number_flags(make())
    assert flags, script
    for action in flags:
        assert action.type not in (int, float, None), f"{script} {action.option_strings[0]} has no range"
        for bad in ("nan", "-1e9", "x"):
            with pytest.raises(SystemExit) as exit_info:
                make().parse_args([*minimal, f"{action.option_strings[-1]}={bad}"])
            line = capsys.readouterr().err.strip()
            assert exit_info.value.code == 2 and "\n" not in line, line
            assert f"argument {'/'.join(action.option_strings)}: " in line, line
            assert documented(line[len("error: "):].split(" (see ")[0]), line


@pytest.mark.parametrize("module_name", GENERATORS)
def test_the_generators_number_flags_have_ranges(module_name, monkeypatch):
    parser = generator_parser(module_name, monkeypatch)
    for action in number_flags(parser):
        assert action.type not in (int, float, None), f"{module_name} {action.option_strings[0]} has no range"
        positionals = ["x" for a in parser._actions if not a.option_strings and a.nargs is None]
        required = [part for a in parser._actions if a.option_strings and a.required
                    for part in (a.option_strings[0], "x")]
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*positionals, *required, f"{action.option_strings[-1]}=-1"])
        assert exit_info.value.code == 2


def test_a_number_flag_within_its_range_is_read_as_given():
    args = options.train_options().parse_args(["--output", "x.safetensors", "--lr", "0.5", "--grad_clip", "0",
                                               "--epochs", "3", "--keep_gb", "0"])
    assert (args.lr, args.grad_clip, args.epochs, args.keep_gb) == (0.5, 0.0, 3, 0.0)
    assert options.eval_options().parse_args(["--cap", "50", "--limit", "2"]).cap == 50.0


def their_params(tmp_path, edit):
    params = {"basic": {"dataset": "nyu", "batch_size": 4, "max_epochs": 2},
              "optimizer": {"name": "adamw", "lr": 0.01, "wd": 0.1, "div_factor": 25, "final_div_factor": 100,
                            "gradient_clip_val": 0.1},
              "depthclip": {"clip": "RN50", "lang_strat": {"templates": "learned-static-1o1d",
                                                           "depth_tokens": "learned-static-7",
                                                           "object_tokens": "paper", "depth_bin_centres": "dset-even-7"}}}
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


def test_an_unknown_params_key_is_refused_before_anything_loads(tmp_path, capsys):
    def misspelt_rate(params):
        params["optimizer"]["learning_rate"] = params["optimizer"].pop("lr")
    line = error_line(capsys, ["--config", their_params(tmp_path, misspelt_rate), "--output", str(tmp_path / "o")], 2)
    assert "optimizer.learning_rate is not a key of their params YAML" in line and "lr" in line

    def misspelt_layout(params):
        strategy = params["depthclip"]["lang_strat"]
        strategy["depth_token"] = strategy.pop("depth_tokens")
    line = error_line(capsys, ["--config", their_params(tmp_path, misspelt_layout), "--output", str(tmp_path / "o")], 2)
    assert "depthclip.lang_strat.depth_token is not a key" in line and "did you mean 'depth_tokens'?" in line
    assert not (tmp_path / "o").exists()


def test_an_unknown_params_key_is_refused_for_prompts_config_too(tmp_path, capsys, checkpoint):
    import eval as evaluation
    from synthetic.auty_checkpoint import write_run
    ckpt, params = write_run(str(tmp_path / "run"), checkpoint)
    with open(params) as f:
        config = yaml.safe_load(f)
    config["basic"]["max_epoch"] = 3
    with open(params, "w") as f:
        yaml.safe_dump(config, f)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: evaluation.main(["--prompts", ckpt, "--prompts_config", params, "--clip_model", checkpoint]))
    line = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "basic.max_epoch is not a key" in line and "max_epochs" in line


def test_their_params_keys_read_as_before(tmp_path):
    """A params file with every key their params files use (a section of each) still reads."""
    def full(params):
        params["nyu"] = {"min_depth": 0.001, "max_depth": 10, "eigen_crop": True, "garg_crop": False,
                         "do_kb_crop": False, "train_path": "sync", "filenames_file_train": "x.txt"}
        params["hardware"] = {"num_workers": 4}
        params["loss"] = {"names": ["silog"], "coeffs": [1]}
        params["model"] = {"name": "depthclip"}
        params["basic"].update({"validate_every": 1, "use_adabins_dataloader": True})
    args = options.train_options().parse_args(["--output", "x"])
    import learned_prompts
    assert learned_prompts.read_params(their_params(tmp_path, full), "--config")["nyu"]["max_depth"] == 10
    assert args.lr == learned_prompts.TRAINING_DEFAULTS["lr"]


def test_tensorboard_is_asked_for_at_start(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    line = error_line(capsys, ["--output", str(tmp_path / "o"), "--tensorboard", str(tmp_path / "tb")], 2)
    assert "pip install tensorboard" in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize("script", list(PARSERS))
def test_help_shows_every_default_and_no_path_of_this_machine(script):
    make, _ = PARSERS[script]
    parser = make()
    text = " ".join(parser.format_help().split())
    assert options.REPOSITORY not in text and os.path.expanduser("~") + os.sep not in text
    for action in parser._actions:
        if action.option_strings and action.default not in (None, argparse.SUPPRESS) and \
                not isinstance(action.default, bool):
            assert action.help, f"{script} {action.option_strings[0]} has a default but no help to show it in"
            assert "default" in parser._get_formatter()._get_help_string(action), action.option_strings[0]


def test_runtime_help_says_the_order_auto_tries():
    from graph_runtime import AUTO_ORDER
    text = " ".join(options.eval_options().format_help().split())
    said = [text.index(options.RUNTIME_NAMES[name], text.index("--runtime {")) for name in AUTO_ORDER]
    assert said == sorted(said)


def test_train_refuses_a_precision_it_does_not_train_in(capsys, tmp_path):
    line = error_line(capsys, ["--output", str(tmp_path / "o"), "--precision", "fp16"], 2)
    assert "train.py trains in fp32" in line


PACKAGE_SCRIPTS = ["convert_prompts", "datasets.prepare_nyu", "datasets.prepare_kitti", "datasets.prepare_zeroshot",
                   "datasets.prepare_captions"]


def named_actions(parser):
    """{long name: action} of the flags a user sees (an old spelling, help suppressed, is the new name's)."""
    return {name: action for action in parser._actions if action.help != argparse.SUPPRESS
            for name in action.option_strings if name.startswith("--") and name != "--help"}


def test_one_name_one_meaning_across_every_script(monkeypatch):
    """A flag name more than one script takes is defined once (options.FLAGS) and keeps its destination, type and
    action everywhere; a script may only narrow its choices (eval.py's datasets, train.py's)."""
    parsers = {script: make() for script, (make, _) in PARSERS.items()}
    parsers.update({name: generator_parser(name, monkeypatch) for name in PACKAGE_SCRIPTS})
    seen = {}
    for script, parser in parsers.items():
        for name, action in named_actions(parser).items():
            seen.setdefault(name, []).append((script, action))
    shared = {name: uses for name, uses in seen.items() if len(uses) > 1}
    assert {"--seed", "--bins", "--output", "--normalize", "--batch_size", "--cache"} <= set(shared)
    groups = options.parser("groups", "")  # options' group helpers: each flag of theirs is defined there once
    options.add_model_arguments(groups)
    options.add_batch_arguments(groups)
    options.add_relative_arguments(groups, "maps")
    by_helper = named_actions(groups)
    for name, uses in shared.items():
        assert name in options.FLAGS or name in by_helper, \
            f"{name} is defined in {', '.join(s for s, _ in uses)}, not once in options"
        defined = options.FLAGS.get(name) or vars(by_helper[name])
        for script, action in uses:
            where = f"{script} {name}"
            assert action.dest == defined.get("dest", name[2:]), where
            assert action.type is defined.get("type"), where
            assert type(action).__name__ == type(seen[name][0][1]).__name__, where
            if defined.get("choices") is not None:
                assert set(action.choices) <= set(defined["choices"]), where


def test_old_spellings_still_work_with_a_note(capsys):
    args = options.predict_options().parse_args(["photo.jpg", "--output", "out"])
    assert args.output == "out" and "--output_dir" in capsys.readouterr().err
    args = options.train_options().parse_args(options.train_argv(["--bins", "dset-log-7", "--output", "x.safetensors"]))
    assert (args.bin_set, args.bins) == ("dset-log-7", None) and "--bin_set" in capsys.readouterr().err
    args = options.train_options().parse_args(options.train_argv(["--bins", "1,2.5", "--output", "x.safetensors"]))
    assert args.bins == [1.0, 2.5] and capsys.readouterr().err == ""
    args = options.parse_eval_args(["--dataset", "KITTI", "--kitti_protocol", "authors"])
    assert args.scored_as == "kitti_depthclip"
    for protocol, dataset, row in (("depthclip", "KITTI", "kitti_bts"), ("auty2023", "NYU", "nyu_auty2023"),
                                   (None, "NYU", "nyu_depthclip"), ("kitti_depthclip", "KITTI", "kitti_depthclip")):
        assert options.parse_eval_args(["--dataset", dataset] + (["--protocol", protocol] if protocol else [])
                                       ).scored_as == row


@pytest.mark.parametrize("argv, says", [
    (["--dataset", "ETH3D", "--data_path", "x", "--protocol", "auty2023"], "--protocol auty2023 has no row for ETH3D"),
    (["--dataset", "NYU", "--protocol", "kitti_bts"], "--protocol kitti_bts scores KITTI, not NYU"),
    (["--dataset", "NYU", "--protocol", "auty2023", "--median_scale"], "without --median_scale"),
    (["--dataset", "KITTI", "--align", "lstsq"], "NYU and KITTI take none or median"),
])
def test_a_protocol_that_does_not_fit_is_one_line(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        options.parse_eval_args(argv)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and says in line, line
    assert documented(line.split("error: ", 1)[1]), line


def test_the_protocol_table_prints_every_row(capsys):
    print(protocols.table())
    text = capsys.readouterr().out
    assert all(f"{name}  ({row.dataset};" in text for name, row in protocols.PROTOCOLS.items())
    assert set(protocols.DEFAULTS.values()) <= set(protocols.PROTOCOLS) and options.DATASETS == list(protocols.DEFAULTS)


def test_cap_and_eval_crop_change_only_kittis_depthclip_rows():
    """--cap and --eval_crop are the DepthCLIP/BTS KITTI protocols' knobs; Auty & Mikolajczyk's and RSA's KITTI rows
    score as their code does whatever they say."""
    for name in ("kitti_bts", "kitti_depthclip"):
        row = protocols.with_flags(protocols.PROTOCOLS[name], 50.0, "eigen")
        assert (row.valid_range[1], row.clamp[1], row.crop_fractions) == (50.0, 50.0, kitti.CROPS["eigen"])
    for name in ("kitti_auty2023", "kitti_rsa", "nyu_depthclip"):
        assert protocols.with_flags(protocols.PROTOCOLS[name], 50.0, "eigen") == protocols.PROTOCOLS[name]
