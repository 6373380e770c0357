"""Tab completion for the `vaelab` command in bash and zsh.

    eval "$(vaelab -sc install=bash)"     # in ~/.bashrc
    eval "$(vaelab -sc install=zsh)"      # in ~/.zshrc (through zsh's bashcompinit)

Hydra completes one app per program; `vaelab` has subcommands, so the shell asks
`vaelab -sc query=bash` with the line typed so far (``COMP_LINE``) and this module
answers: the subcommands for the first word, Hydra's own completion of the train or
eval config (groups, options, keys) after `train`/`eval`, and compare's flags after
`compare` (directories are the shell's own completion). `vaelab train -sc …`, the
form `--hydra-help` prints, lands here too. Like cli.py, this imports only Hydra (and
compare's argument parser when completing `vaelab compare`).
"""

from __future__ import annotations

import os
import re
import sys

from vaelab.errors import UserError

SHELLS = ("bash", "zsh")

# The shell function: it hands vaelab the line up to the cursor and filters the answer
# against the word being completed. Bash ends a word at '=' (COMP_WORDBREAKS), so after
# `objective=` the shell replaces only what follows the '=': the function strips the key
# from each suggestion instead of changing COMP_WORDBREAKS for every other command.
# Suggestions that end a word (an option, a subcommand) get their trailing space.
BASH_SCRIPT = r"""_vaelab_complete()
{
    local line=${COMP_LINE:0:COMP_POINT}
    local word=${line##*[[:space:]]}
    local choices
    choices=$(COMP_LINE="$line" vaelab -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -W "$choices" -- "$word"))
    local i
    for i in "${!COMPREPLY[@]}"; do
        if [[ $word == *=* ]]; then
            COMPREPLY[$i]=${COMPREPLY[$i]#"${word%=*}="}
        fi
        case ${COMPREPLY[$i]} in
            *= | *. | */) ;;
            *) COMPREPLY[$i]="${COMPREPLY[$i]} " ;;
        esac
    done
}
complete -o nospace -o default -F _vaelab_complete vaelab
"""
ZSH_PREAMBLE = "autoload -U +X bashcompinit && bashcompinit\n"


def is_completion_request(argv: list[str]) -> bool:
    """``-sc …`` / ``--shell-completion …`` at the top or right after `train`/`eval`."""
    flags = ("-sc", "--shell-completion")
    return bool(argv) and (argv[0] in flags or (len(argv) > 1 and argv[0] in ("train", "eval") and argv[1] in flags))


def main(argv: list[str], hydra_mains: dict) -> int:
    """Answer ``vaelab [train|eval] -sc install=SHELL | uninstall=SHELL | query=SHELL``."""
    if argv and argv[0] in ("train", "eval"):
        argv = argv[1:]
    request = argv[1] if len(argv) == 2 else ""
    match = re.fullmatch(r"(install|uninstall|query)=(\w+)", request)
    if match is None or match.group(2) not in SHELLS:
        raise UserError(f"shell completion: expected -sc install=SHELL, uninstall=SHELL or query=SHELL "
                        f"with SHELL one of {', '.join(SHELLS)}; got {' '.join(argv[1:]) or 'nothing'}")  # fmt: skip
    action, shell = match.groups()
    if action == "install":
        print((ZSH_PREAMBLE if shell == "zsh" else "") + BASH_SCRIPT, end="")
    elif action == "uninstall":
        print("complete -r vaelab 2>/dev/null; unset -f _vaelab_complete")
    else:
        print(" ".join(suggestions(os.environ.get("COMP_LINE", ""), hydra_mains)))
    return 0


def suggestions(line: str, hydra_mains: dict) -> list[str]:
    """What may follow ``line`` (the command line up to the cursor, program name first)."""
    match = re.match(r"\s*\S+\s+(\S+)(\s+|$)", line)
    if match is None or not match.group(2):  # still typing the subcommand
        return ["train", "eval", "compare"]
    command, rest = match.group(1), line[match.end():]
    if command == "compare":
        return compare_flags()
    if command not in hydra_mains:
        return []
    return _hydra_suggestions(hydra_mains[command], rest)


def compare_flags() -> list[str]:
    """The long options of `vaelab compare`, read from its parser (directories are the shell's)."""
    from vaelab.compare import build_parser

    return sorted(option for action in build_parser()._actions  # argparse's list of what it parses
                  for option in action.option_strings if option.startswith("--"))  # fmt: skip


def _hydra_suggestions(hydra_main, rest: str) -> list[str]:
    """Hydra's completion of one app's overrides, captured from its query (it prints)."""
    import contextlib
    import io

    environ, argv = os.environ.get("COMP_LINE"), sys.argv
    os.environ["COMP_LINE"] = f"vaelab {rest}"  # Hydra strips the first word as the program
    sys.argv = [sys.argv[0], "-sc", "query=bash"]
    answer = io.StringIO()
    try:
        with contextlib.redirect_stdout(answer):
            hydra_main()
    except (Exception, SystemExit):  # a half-typed line Hydra cannot parse: nothing to offer
        return []
    finally:
        sys.argv = argv
        if environ is None:
            os.environ.pop("COMP_LINE", None)
        else:
            os.environ["COMP_LINE"] = environ
    return answer.getvalue().split()
