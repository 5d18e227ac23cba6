"""Command line flags mean what the API's arguments mean; bad values are argparse errors."""
import argparse

import pytest

from idselect import __main__ as cli
from idselect.tools import demo, evaluate, flops
from idselect.tools.cli_args import keep_value


@pytest.mark.parametrize("text,value", [("64", 64), ("1", 1), ("1.0", 1.0), ("0.25", 0.25), ("2.5e-1", 0.25)])
def test_keep_value_reads_like_the_api(text, value):
    parsed = keep_value(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text,message", [("0", "--keep: keep must be >= 1 tokens, got keep='0'"),
                                          ("-5", "keep must be >= 1 tokens, got keep='-5'"),
                                          ("-0.5", r"fractional keep must be in \(0, 1\], got keep='-0.5'"),
                                          ("64.0", r"fractional keep must be in \(0, 1\], got keep='64.0'"),
                                          ("all", r"keep must be a token count \(64\) or a fraction in \(0, 1\] \(0.25\), got keep='all'")])
def test_keep_value_refuses(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        keep_value(text)


@pytest.mark.parametrize("main,argv,flag", [
    (demo.main, ["--keep", "-5"], "--keep"), (demo.main, ["--repeats", "0"], "--repeats"),
    (demo.main, ["--max-new-tokens", "0"], "--max-new-tokens"),
    (evaluate.main, ["--model", "m", "--data", "d", "--limit", "0"], "--limit"),
    (evaluate.main, ["--model", "m", "--data", "d", "--keep", "0"], "--keep"),
    (flops.main, ["--keep", "-5"], "--keep"), (flops.main, ["--text-tokens", "-1"], "--text-tokens"),
    (cli.main, ["bench", "--repeats", "0"], "--repeats"),
])
def test_bad_flags_are_argparse_errors(main, argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_keep_one_point_zero_keeps_everything(tmp_path, capsys):
    assert demo.main(["--keep", "1.0", "--repeats", "1", "--max-new-tokens", "1", "--out", str(tmp_path / "k.png")]) == 0
    assert "visual tokens: 576 -> 576" in capsys.readouterr().out
