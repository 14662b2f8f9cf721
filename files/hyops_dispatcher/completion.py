"""Bash completion generated from the argparse parser (`completion bash`): the commands,
each command's flags, the choices of an option or argument that has them, file names
after --config.

Invariant: derived from the parser only (no list of commands or flags of its own), so a
new command or flag completes without a change here; imports nothing of the package.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Dict, List, Sequence, Tuple


def _subcommands(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps them here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> Tuple[List[str], Dict[str, List[str]]]:
    """(every option string, {option that takes a value: its choices, or [] for any})."""
    flags: List[str] = []
    values: Dict[str, List[str]] = {}
    for action in parser._actions:
        if not action.option_strings:
            continue
        flags.extend(action.option_strings)
        if action.nargs != 0:
            for option in action.option_strings:
                values[option] = [str(c) for c in action.choices or ()]
    return flags, values


def _positional_choices(parser: argparse.ArgumentParser) -> List[str]:
    words: List[str] = []
    for action in parser._actions:
        if (
            not action.option_strings
            and action.choices
            and not isinstance(action, argparse._SubParsersAction)
        ):
            words.extend(str(c) for c in action.choices)
    return words


def _words(words: Sequence[str]) -> str:
    return shlex.quote(" ".join(words))


def _value_cases(values: Dict[str, List[str]], indent: str) -> List[str]:
    """`case "$prev"`: after an option that takes a value, its choices (files after
    --config, nothing for a free value)."""
    lines = [f'{indent}case "$prev" in']
    for option, choices in sorted(values.items()):
        if option == "--config":
            reply = 'COMPREPLY=($(compgen -f -- "$cur"))'
        elif choices:
            reply = f'COMPREPLY=($(compgen -W {_words(choices)} -- "$cur"))'
        else:
            reply = "COMPREPLY=()"
        lines.append(f"{indent}    {shlex.quote(option)}) {reply}; return ;;")
    lines.append(f"{indent}esac")
    return lines


def bash_script(parser: argparse.ArgumentParser, names: Sequence[str]) -> str:
    """The completion script for the commands `names` (the short command, dispatcher.py)."""
    function = "_" + re.sub(r"[^A-Za-z0-9_]", "_", names[0])
    commands = _subcommands(parser)
    top_flags, top_values = _options(parser)
    skip = "|".join(shlex.quote(o) for o in sorted(top_values)) or "--"
    lines = [
        f"# bash completion for {' and '.join(names)}, generated from its parser by",
        f"# `{names[0]} completion bash`; regenerate it rather than edit it.",
        f"{function}() {{",
        "    local cur prev cmd i",
        '    cur="${COMP_WORDS[COMP_CWORD]}"',
        '    prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    cmd=""',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        f"            {skip}) ((i++)) ;;",
        "            -*) ;;",
        '            *) cmd="${COMP_WORDS[i]}"; break ;;',
        "        esac",
        "    done",
        '    case "$cmd" in',
        '        "")',
        *_value_cases(top_values, "            "),
        '            if [[ "$cur" == -* ]]; then',
        f'                COMPREPLY=($(compgen -W {_words(top_flags)} -- "$cur"))',
        "            else",
        f'                COMPREPLY=($(compgen -W {_words(sorted(commands))} -- "$cur"))',
        "            fi",
        "            ;;",
    ]
    for name, sub in sorted(commands.items()):
        flags, values = _options(sub)
        arguments = _words(_positional_choices(sub))
        lines += [
            f"        {shlex.quote(name)})",
            *_value_cases(values, "            "),
            '            if [[ "$cur" == -* ]]; then',
            f'                COMPREPLY=($(compgen -W {_words(flags)} -- "$cur"))',
            "            else",
            f'                COMPREPLY=($(compgen -W {arguments} -- "$cur"))',
            "            fi",
            "            ;;",
        ]
    lines += [
        "    esac",
        "}",
        f"complete -o default -F {function} {' '.join(shlex.quote(n) for n in names)}",
        "",
    ]
    return "\n".join(lines)
