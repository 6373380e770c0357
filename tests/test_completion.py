"""Tab completion as the shell runs it: the installed bash function, COMP_LINE, the suggestions."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env
from vaelab.registry import DATASETS


def config_options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(REPO) / "conf" / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def bash_with_completion(tmp_path_factory):
    """A function that presses TAB after a command line in bash with vaelab's completion installed
    (`eval "$(vaelab -sc install=bash)"`, the line --hydra-help gives) and returns COMPREPLY."""
    bin_dir = tmp_path_factory.mktemp("bin")
    program = bin_dir / "vaelab"  # the console script, as `pip install` puts it on PATH
    program.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m vaelab "$@"\n')
    program.chmod(0o755)
    env = cli_env(bin_dir, {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})

    def press_tab(line: str) -> list[str]:
        # What bash sets before calling a completion function: COMP_WORDS split at '=' too.
        script = f"""
            eval "$(vaelab -sc install=bash)"
            COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}
            _vaelab_complete
            printf '%s\\n' "${{COMPREPLY[@]}}"
        """
        done = subprocess.run(["bash", "-c", script], env=env, cwd=bin_dir, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr, done.stderr
        return done.stdout.splitlines()

    return press_tab


@pytest.mark.slow
def test_bash_completes_subcommands_keys_and_options(bash_with_completion):
    assert bash_with_completion("vaelab tr") == ["train "]
    # A key ends in '=' (or '.' for a group of keys): no space, the value follows.
    assert "objective=" in bash_with_completion("vaelab train obj")
    # After 'objective=' bash replaces only the part after '=', so the options come bare.
    options = bash_with_completion("vaelab train objective=")
    assert sorted(option.strip() for option in options) == config_options("objective")
    assert all(option.endswith(" ") for option in options)
    assert bash_with_completion("vaelab train objective=info") == [
        f"{name} " for name in config_options("objective") if name.startswith("info")
    ]
    assert bash_with_completion("vaelab eval ck") == ["ckpt="]
    assert bash_with_completion("vaelab train -m seed=1,2 model.lat") == ["model.latent_dim="]
    assert "--contrast " in bash_with_completion("vaelab compare runs --con")


def test_completion_query_reads_comp_line(monkeypatch, capsys):
    from vaelab.cli import MAINS
    from vaelab.completion import main

    monkeypatch.setenv("COMP_LINE", "vaelab train dataset=")
    assert main(["-sc", "query=bash"], MAINS) == 0
    suggested = {name.removeprefix("dataset=") for name in capsys.readouterr().out.split()}
    # the yamls of conf/dataset/, and any dataset registered in this process without one (vaelab/config_source.py)
    assert set(config_options("dataset")) <= suggested <= set(config_options("dataset")) | set(DATASETS.names())


def test_zsh_gets_the_bash_function_through_bashcompinit(monkeypatch, capsys):
    from vaelab.cli import MAINS
    from vaelab.completion import main

    assert main(["train", "-sc", "install=zsh"], MAINS) == 0
    script = capsys.readouterr().out
    assert script.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -o nospace -o default -F _vaelab_complete vaelab" in script


@pytest.mark.parametrize("request_", [["-sc", "install=fish"], ["-sc"], ["--shell-completion", "query"]])
def test_unknown_completion_requests_are_one_line_errors(request_, capsys):
    from vaelab.cli import main

    with pytest.raises(SystemExit) as stop:
        main(request_)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("vaelab: error: shell completion: expected") and error.count("\n") == 1
