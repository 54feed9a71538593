# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rails ActiveRecord migrations, run down one version at a time by the application's own ``bin/rails``.

The revision is the newest version in ``schema_migrations`` (read with the database's own client,
as the backup reads it). The down steps are the applied versions above the target, newest first,
each classified from its Ruby source in ``db/migrate/<version>_<name>.rb``:

* ``down`` (or a ``reversible`` block's ``dir.down``): ``raise ActiveRecord::IrreversibleMigration``
  cannot run; ``drop_table``, ``remove_column(s)``, ``remove_reference``, ``remove_timestamps``,
  ``change_column`` and ``execute`` of data-losing SQL are destructive;
* ``change``: what ActiveRecord's CommandRecorder would run backwards: ``create_table`` and
  ``add_column`` come back as drops (destructive); ``execute``, ``change_column`` and
  ``remove_column`` without a type cannot be reversed by ActiveRecord (irreversible, cannot run).

The reader is a small Ruby tokenizer, not Ruby: whatever it does not follow (a call it does not
know, SQL built at run time, a file it cannot parse) is *unclassified*, which needs the same
approval as a destructive step.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base

try:
    from urllib.parse import quote, urlsplit
except ImportError:  # pragma: no cover
    from urllib import quote  # type: ignore

    from urlparse import urlsplit  # type: ignore

_MIGRATION_FILE = re.compile(r"^([0-9]+)_([_a-z0-9]*)\.?([_a-z0-9]*)?\.rb$")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z0-9_]{1,40}$")
_MARK = "RELEASE-ROLLBACK-IDENTITY "

# ------------------------------------------------------------------------------ Ruby tokenizer


def _words(text):
    return frozenset(text.split())


_KEYWORDS = _words(
    "alias and begin break case class def defined? do else elsif end ensure false for if in module next "
    "nil not or redo rescue retry return self super then true undef unless until when while yield"
)
_OPENERS = frozenset(["def", "class", "module", "begin", "case", "do", "if", "unless", "while", "until", "for"])
_MODIFIABLE = frozenset(["if", "unless", "while", "until", "rescue"])
_CLOSE = {"(": ")", "[": "]", "{": "}", "<": ">", "|": "|", "!": "!", "/": "/"}
# After these tokens a newline does not end the statement.
_CONTINUES = frozenset([",", ".", "&.", "=", "&&", "||", "+", "-", "*", "/", "=>", "\\", "?", ":", "<<", "|"])


class _Unreadable(Exception):
    """The tokenizer met Ruby it does not follow."""


class _Tok:
    __slots__ = ("kind", "line", "value")

    def __init__(self, kind, value, line):
        self.kind = kind  # id, const, kw, sym, str, label, num, op, nl, words, ivar
        self.value = value  # for str: the text, or None when it is built at run time
        self.line = line

    def __repr__(self):  # pragma: no cover - debugging aid
        return "%s:%r" % (self.kind, self.value)


class _Node:
    """A nested part of the source: a ``def``/``do``/``if``... block (closed by ``end``) or a bracket."""

    __slots__ = ("items", "kind", "line")

    def __init__(self, kind, line):
        self.kind = kind
        self.items = []
        self.line = line


def _skip_code(src, i):
    """The index after the ``}`` closing an interpolation ``#{...}`` whose code starts at ``src[i]``."""
    depth = 0
    while i < len(src):
        ch = src[i]
        if ch in "'\"":
            _text, i = _string_body(src, i + 1, ch, interpolates=ch == '"')
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return i + 1
            depth -= 1
        i += 1
    raise _Unreadable("an interpolation #{...} is not closed")


def _string_body(src, i, close, opener=None, interpolates=True):
    """Read a string literal's body from ``src[i]`` to ``close``; returns (text or None, index after)."""
    out, depth, dynamic = [], 0, False
    while i < len(src):
        ch = src[i]
        if ch == "\\" and i + 1 < len(src):
            nxt = src[i + 1]
            if interpolates:
                out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
            else:
                out.append(nxt if nxt in (close, "\\") else "\\" + nxt)
            i += 2
            continue
        if interpolates and ch == "#" and src[i + 1 : i + 2] in ("{", "@", "$"):
            dynamic = True
            if src[i + 1] == "{":
                i = _skip_code(src, i + 2)
                continue
        if opener and ch == opener and opener != close:
            depth += 1
        elif ch == close:
            if depth == 0:
                return (None if dynamic else "".join(out)), i + 1
            depth -= 1
        out.append(ch)
        i += 1
    raise _Unreadable("a string is not closed")


def _tokens(src):
    """The source as tokens; comments dropped, heredocs read as strings."""
    toks, i, line, n = [], 0, 1, len(src)
    heredocs = []  # [(token, terminator, squiggly_or_dash, interpolates)]

    def prev():
        return toks[-1] if toks else None

    def value_before():
        """Whether the token before is a value (so ``%``, ``<<``, ``?`` are operators)."""
        p = prev()
        return p is not None and (
            p.kind in ("num", "str", "sym", "const", "ivar", "words")
            or (p.kind == "op" and p.value in (")", "]", "}"))
            or (p.kind == "kw" and p.value in ("end", "self", "true", "false", "nil"))
        )

    while i < n:
        ch = src[i]
        if ch in " \t\r":
            i += 1
            continue
        if ch == "\\" and src[i + 1 : i + 2] == "\n":
            i += 2
            line += 1
            continue
        if ch == "#":
            while i < n and src[i] != "\n":
                i += 1
            continue
        if ch == "\n":
            toks.append(_Tok("nl", "\n", line))
            i += 1
            line += 1
            for tok, term, indented, interpolates in heredocs:
                body = []
                while True:
                    if i >= n:
                        raise _Unreadable("heredoc %s is not closed" % term)
                    end = src.find("\n", i)
                    end = n if end < 0 else end
                    text = src[i:end]
                    i = min(end + 1, n)
                    line += 1
                    if (text.strip() if indented else text) == term:
                        break
                    body.append(text)
                joined = "\n".join(body)
                if interpolates and re.search(r"#[{@$]", joined):
                    tok.value = None
                else:
                    tok.value = joined
            heredocs = []
            continue
        if ch == ";":
            toks.append(_Tok("nl", ";", line))
            i += 1
            continue
        if src.startswith("=begin", i) and (i == 0 or src[i - 1] == "\n"):
            end = src.find("\n=end", i)
            if end < 0:
                raise _Unreadable("=begin without =end")
            line += src.count("\n", i, end + 5)
            i = src.find("\n", end + 5)
            i = n if i < 0 else i
            continue
        if src.startswith("__END__", i) and (i == 0 or src[i - 1] == "\n"):
            break
        m = re.match(r"<<([~-]?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2", src[i:])
        if m and (m.group(1) or m.group(2) or m.group(3).isupper()) and not value_before():
            tok = _Tok("str", None, line)
            toks.append(tok)
            heredocs.append((tok, m.group(3), bool(m.group(1)), m.group(2) != "'"))
            i += m.end()
            continue
        if ch in "'\"`":
            text, i = _string_body(src, i + 1, ch, interpolates=ch != "'")
            line += (text or "").count("\n")
            toks.append(_Tok("str", None if ch == "`" else text, line))
            if src[i : i + 1] == ":" and src[i + 1 : i + 2] != ":":  # "key": value
                toks[-1].kind = "label"
                i += 1
            continue
        m = re.match(r"%([qQwWiIrs]?)([^\w\s])", src[i:])
        if m and not value_before():
            kind, opener = m.group(1), m.group(2)
            text, i = _string_body(src, i + m.end(), _CLOSE.get(opener, opener), opener, kind not in ("q", "w", "i"))
            if kind in ("w", "W", "i", "I"):
                toks.append(_Tok("words", (text or "").split() if text is not None else None, line))
            else:
                toks.append(_Tok("str", text if kind != "r" else None, line))
            continue
        if ch == ":" and src[i + 1 : i + 2] == '"':
            text, i = _string_body(src, i + 2, '"')
            toks.append(_Tok("sym", text, line))
            continue
        m = re.match(r":([A-Za-z_][A-Za-z0-9_]*[?!=]?)", src[i:])
        if m and src[i + 1 : i + 2] != ":" and (i == 0 or src[i - 1] != ":"):
            toks.append(_Tok("sym", m.group(1), line))
            i += m.end()
            continue
        m = re.match(r"[@$]+[A-Za-z_][A-Za-z0-9_]*", src[i:])
        if m:
            toks.append(_Tok("ivar", m.group(0), line))
            i += m.end()
            continue
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*[?!]?", src[i:])
        if m:
            word = m.group(0)
            p = prev()
            i += m.end()
            if src[i : i + 1] == ":" and src[i + 1 : i + 2] != ":":  # key: value
                toks.append(_Tok("label", word, line))
                i += 1
                continue
            after_dot = p is not None and p.kind == "op" and p.value in (".", "&.", "::")
            if word in _KEYWORDS and not after_dot and not (p is not None and p.kind == "kw" and p.value == "def"):
                toks.append(_Tok("kw", word, line))
            elif word[0].isupper():
                toks.append(_Tok("const", word, line))
            else:
                toks.append(_Tok("id", word, line))
            continue
        m = re.match(r"[0-9][0-9_]*(?:\.[0-9][0-9_]*)?(?:[eE][+-]?[0-9]+)?", src[i:])
        if m:
            toks.append(_Tok("num", m.group(0), line))
            i += m.end()
            continue
        m = re.match(r"\*\*|&\.|::|=>|->|==|!=|<=>|<=|>=|&&=|\|\|=|&&|\|\||<<|\+=|-=|\.\.\.|\.\.|=~|!~", src[i:])
        if m:
            toks.append(_Tok("op", m.group(0), line))
            i += m.end()
            continue
        if ch == "?" and re.match(r"\?[A-Za-z]\b", src[i : i + 3]) and not value_before():
            toks.append(_Tok("str", src[i + 1], line))
            i += 2
            continue
        toks.append(_Tok("op", ch, line))
        i += 1
    if heredocs:
        raise _Unreadable("a heredoc is not closed")
    return toks


def _is_statement_start(p):
    return (
        p is None
        or p.kind == "nl"
        or (p.kind == "op" and p.value in ("(", "=", ",", "[", "{", "||", "&&", "!", "=>", "||=", "&&=", "|"))
        or (p.kind == "kw" and p.value in ("then", "else", "do", "and", "or", "not", "return", "begin", "ensure"))
    )


def _tree(toks):
    """Nest the tokens: blocks (``def``, ``do``, ``if``... up to ``end``) and brackets become nodes."""
    root = _Node("file", 1)
    stack = [root]
    prev = None
    loop_do = False
    for tok in toks:
        top = stack[-1]
        if tok.kind == "nl":
            loop_do = False
        if tok.kind == "kw" and tok.value in _OPENERS:
            opens = True
            if tok.value in _MODIFIABLE and not _is_statement_start(prev):
                tok = _Tok("kw", tok.value + "_mod", tok.line)
                opens = False
            elif tok.value == "do" and loop_do:
                loop_do, opens = False, False
            if opens:
                node = _Node(tok.value, tok.line)
                top.items.append(node)
                stack.append(node)
                if tok.value in ("while", "until", "for"):
                    loop_do = True
                prev = tok
                continue
        elif tok.kind == "kw" and tok.value == "end":
            if len(stack) < 2 or stack[-1].kind in ("(", "[", "{"):
                raise _Unreadable("an 'end' on line %d closes nothing" % tok.line)
            stack.pop()
            prev = _Tok("kw", "end", tok.line)
            continue
        elif tok.kind == "op" and tok.value in ("(", "[", "{"):
            node = _Node(tok.value, tok.line)
            top.items.append(node)
            stack.append(node)
            prev = tok
            continue
        elif tok.kind == "op" and tok.value in (")", "]", "}"):
            if {")": "(", "]": "[", "}": "{"}[tok.value] != stack[-1].kind:
                raise _Unreadable("a '%s' on line %d closes nothing" % (tok.value, tok.line))
            stack.pop()
            prev = tok
            continue
        top.items.append(tok)
        prev = tok
    if len(stack) != 1:
        raise _Unreadable("a '%s' opened on line %d is not closed" % (stack[-1].kind, stack[-1].line))
    return root


def _is(item, kind, value=None):
    return isinstance(item, _Tok) and item.kind == kind and (value is None or item.value == value)


def _statements(items):
    """Split a node's items into statements (lists of items)."""
    out, cur = [], []
    for k, item in enumerate(items):
        separator = _is(item, "nl") or (
            isinstance(item, _Tok)
            and item.kind == "kw"
            and item.value in ("then", "else", "elsif", "when", "in", "rescue", "ensure")
        )
        if separator:
            if _is(item, "nl") and cur and _is(cur[-1], "op") and cur[-1].value in _CONTINUES:
                continue
            nxt = items[k + 1] if k + 1 < len(items) else None
            if _is(item, "nl") and isinstance(nxt, _Tok) and nxt.kind == "op" and nxt.value in (".", "&."):
                continue
            if cur:
                out.append(cur)
            cur = []
            continue
        cur.append(item)
    if cur:
        out.append(cur)
    return out


def _split_args(items):
    """Comma-separated arguments (each a list of items) of a call's argument items."""
    args, cur = [], []
    for item in items:
        if _is(item, "op", ","):
            args.append(cur)
            cur = []
        elif not _is(item, "nl"):
            cur.append(item)
    if cur:
        args.append(cur)
    return args


def _literal(arg):
    """A symbol's or string's value (an argument of one token, or a string with .squish/.strip), else None."""
    if len(arg) == 3 and _is(arg[1], "op", ".") and _is(arg[2], "id") and arg[2].value in _STRING_METHODS:
        arg = arg[:1]
    if len(arg) == 1 and isinstance(arg[0], _Tok) and arg[0].kind in ("sym", "str"):
        return arg[0].value
    return None


_STRING_METHODS = frozenset(["squish", "strip", "chomp", "freeze", "dup"])


# What ActiveRecord's CommandRecorder runs on the way down in place of a ``change`` call that only
# creates something: the matching drop, with the same arguments.
_INVERSE = {
    "create_table": "drop_table",
    "create_join_table": "drop_join_table",
    "add_column": "remove_column",
    "add_reference": "remove_reference",
    "add_belongs_to": "remove_belongs_to",
    "add_timestamps": "remove_timestamps",
    "enable_extension": "disable_extension",
}


class _Call:
    """One call statement: ``recv.name args { block }`` with its modifier condition."""

    def __init__(self, recv, name, positional, labels, block, block_params, condition):
        self.recv = recv
        self.name = name
        self.positional = positional  # list of argument item lists
        self.labels = labels  # {label: item list}
        self.block = block  # a do/{ node or None
        self.block_params = block_params
        self.condition = condition  # items of a trailing if/unless, or None
        self.chained = []  # methods called on the result (``a.where(...).delete_all``)

    def label(self):
        return (
            ".".join([self.recv] if self.recv else [])
            + ("." if self.recv else "")
            + ".".join([self.name] + self.chained)
        )

    def arg(self, index):
        return _literal(self.positional[index]) if index < len(self.positional) else None


def _block_params(node):
    """``|a, b|`` at the start of a block: (names, the rest of its items)."""
    items = node.items
    k = 0
    while k < len(items) and _is(items[k], "nl"):
        k += 1
    if k < len(items) and _is(items[k], "op", "|"):
        names, k = [], k + 1
        while k < len(items) and not _is(items[k], "op", "|"):
            if _is(items[k], "id"):
                names.append(items[k].value)
            k += 1
        return names, items[k + 1 :]
    if k < len(items) and _is(items[k], "op", "||"):
        return [], items[k + 1 :]
    return [], items


def _call(stmt):
    """Read a statement as a call, or None when it is not one."""
    items = list(stmt)
    condition = None
    for k, item in enumerate(items):
        if isinstance(item, _Tok) and item.kind == "kw" and item.value in ("if_mod", "unless_mod"):
            items, condition = items[:k], items[k + 1 :]
            break
    if not items or not (isinstance(items[0], _Tok) and items[0].kind in ("id", "const", "ivar")):
        return None
    recv, k = None, 1
    name = items[0].value
    while k + 1 < len(items) and _is(items[k], "op") and items[k].value in (".", "&.", "::"):
        if not (isinstance(items[k + 1], _Tok) and items[k + 1].kind in ("id", "const", "kw")):
            return None
        recv = name if recv is None else recv + "." + name
        name = items[k + 1].value
        k += 2
    rest = items[k:]
    chained = [
        rest[j + 1].value
        for j in range(len(rest) - 1)
        if _is(rest[j], "op") and rest[j].value in (".", "&.") and _is(rest[j + 1], "id")
    ]
    block = None
    if (rest and isinstance(rest[-1], _Node) and rest[-1].kind == "do") or (
        rest
        and isinstance(rest[-1], _Node)
        and rest[-1].kind == "{"
        and (len(rest) == 1 or (len(rest) == 2 and isinstance(rest[0], _Node) and rest[0].kind == "("))
    ):
        block, rest = rest[-1], rest[:-1]
    if len(rest) == 1 and isinstance(rest[0], _Node) and rest[0].kind == "(":
        rest = rest[0].items
    positional, labels = [], {}
    for arg in _split_args(rest):
        if arg and _is(arg[0], "label"):
            labels[arg[0].value] = arg[1:]
        elif len(arg) > 2 and _is(arg[0], "sym") and _is(arg[1], "op", "=>"):
            labels[arg[0].value] = arg[2:]
        elif arg and isinstance(arg[0], _Node) and arg[0].kind == "{" and len(arg) == 1:
            for inner in _split_args(arg[0].items):
                if inner and _is(inner[0], "label"):
                    labels[inner[0].value] = inner[1:]
        else:
            positional.append(arg)
    params, body = _block_params(block) if block is not None else ([], None)
    if block is not None:
        block = _Node(block.kind, block.line)
        block.items = body
    call = _Call(recv, name, positional, labels, block, params, condition)
    call.chained = chained
    return call


# ----------------------------------------------------------------------------------- classifier

# Calls that change nothing a down step could lose (or only read).
_SAFE = _words(
    "add_check_constraint add_foreign_key add_index change_column_comment change_column_default "
    "change_table_comment column_exists? foreign_key_exists? index_exists? index_name_exists? puts "
    "remove_check_constraint remove_foreign_key remove_index rename_column rename_index rename_table say "
    "table_exists? view_exists?"
)
# Methods on a value that only read it (in a condition or an assigned value).
_HARMLESS_METHODS = _words(
    "present? blank? nil? empty? any? zero? positive? to_i to_s to_sym adapter_name connection squish "
    "strip downcase upcase include? start_with?"
)
_READS = frozenset(["select_all", "select_one", "select_rows", "select_value", "select_values", "exec_query"])
# ``t.<type> :column`` inside create_table/change_table.
_COLUMN_TYPES = _words(
    "bigint binary boolean date datetime decimal float integer json jsonb numeric string text time "
    "timestamp uuid virtual blob column references belongs_to timestamps hstore inet cidr macaddr citext "
    "money point line xml bit tsvector interval daterange numrange tsrange tstzrange int4range int8range"
)


class _Reader:
    """Walks a migration method's statements and collects what running it *down* does."""

    def __init__(self):
        self.lost = []  # reasons it loses data
        self.unknown = []  # what the reader cannot follow
        self.raises = []  # (exception, unconditional)
        self.cannot = []  # reasons ActiveRecord cannot reverse a change (IrreversibleMigration)
        self.ran = 0  # statements seen that do something on the way down
        self.vars = {}

    # -- helpers
    def _unknown(self, what):
        self.unknown.append(what)

    def _name(self, call, index):
        value = call.arg(index)
        return value if value is not None else "?"

    def _scan_condition(self, items):
        for stmt in _statements(items):
            self.expression(stmt)

    def expression(self, items):
        """Calls inside an expression (a condition, an assigned value): safe predicates and reads only."""
        for k, item in enumerate(items):
            if isinstance(item, _Node):
                self.expression(item.items)
                continue
            if item.kind != "id" or item.value in self.vars:
                continue
            if k > 0 and _is(items[k - 1], "op") and items[k - 1].value in (".", "&.", "::"):
                if item.value not in _HARMLESS_METHODS:
                    self._unknown("calls %s, which the classifier cannot follow" % item.value)
                continue
            if item.value in _SAFE or item.value in _READS:
                continue
            self._unknown("calls %s, which the classifier cannot follow" % item.value)

    def _raise(self, stmt, conditional):
        parts = []
        for t in stmt[1:]:  # raise Some::Error, "message" / raise Some::Error.new(...) / raise "message"
            if not (_is(t, "const") or _is(t, "op", "::")):
                break
            parts.append(t.value)
        name = "".join(parts) or "RuntimeError"
        message = [t.value for t in stmt[1:] if _is(t, "str") and t.value]
        if message:
            name += " (%s)" % message[0][:120]
        self.raises.append((name, not conditional))

    # -- the walk
    def body(self, items, mode, conditional=False):
        for stmt in _statements(items):
            self.statement(stmt, mode, conditional)

    def statement(self, stmt, mode, conditional):
        first = stmt[0]
        if isinstance(first, _Node):
            if first.kind in ("if", "unless", "case", "begin", "while", "until"):
                inner = _statements(first.items)
                if inner and first.kind in ("if", "unless", "case", "while", "until"):
                    self._scan_condition(inner[0])
                    inner = inner[1:]
                for sub in inner:
                    self.statement(sub, mode, conditional or first.kind != "begin")
                return
            self._unknown("a %s block on line %d the classifier cannot follow" % (first.kind, first.line))
            return
        if _is(first, "kw", "raise") or _is(first, "id", "raise") or _is(first, "id", "fail"):
            cond = conditional
            for item in stmt:
                if isinstance(item, _Tok) and item.kind == "kw" and item.value in ("if_mod", "unless_mod"):
                    cond = True
            self._raise(stmt, cond)
            return
        if _is(first, "kw") and first.value in ("return", "next", "break") and len(stmt) == 1:
            return
        if len(stmt) >= 3 and _is(first, "id") and _is(stmt[1], "op", "="):
            value = stmt[2:]
            self.vars[first.value] = _literal(value) if len(value) == 1 else None
            self.expression(value)
            return
        call = _call(stmt)
        if call is None:
            self._unknown("line %d is not a call the classifier can read" % getattr(first, "line", 0))
            return
        if call.condition:
            self._scan_condition(call.condition)
        if mode == "change":
            self.change_call(call, conditional or bool(call.condition))
        else:
            self.down_call(call, conditional or bool(call.condition))

    def _execute(self, call, where):
        if not call.positional:
            self._unknown("%s without SQL" % where)
            return
        arg = call.positional[0]
        sql = _literal(arg)
        if sql is None and len(arg) == 1 and _is(arg[0], "id"):
            sql = self.vars.get(arg[0].value)
        if sql is None:
            self._unknown("runs SQL built at run time (%s), which cannot be read before it runs" % where)
            return
        lost, unknown = _db._sql_findings(sql)
        self.lost += lost
        self.unknown += unknown

    def _block_of(self, call, mode, conditional):
        if call.block is not None:
            self.body(call.block.items, mode, conditional)

    def down_call(self, call, conditional):
        """A call run as it is, on the way down (``down``, ``dir.down``)."""
        name = call.name
        if call.recv is not None:
            if name == "reset_column_information":
                return
            self._unknown("calls %s, which the classifier cannot follow" % call.label())
            return
        self.ran += 1
        table = self._name(call, 0)
        if name == "drop_table":
            self.lost.append("drops table %s (and its rows)" % table)
        elif name == "drop_join_table":
            self.lost.append("drops the join table of %s and %s (and its rows)" % (table, self._name(call, 1)))
        elif name == "remove_column":
            self.lost.append("drops column %s.%s" % (table, self._name(call, 1)))
        elif name == "remove_columns":
            for k in range(1, len(call.positional)):
                self.lost.append("drops column %s.%s" % (table, self._name(call, k)))
        elif name in ("remove_reference", "remove_belongs_to"):
            self.lost.append("drops column %s.%s_id" % (table, self._name(call, 1)))
        elif name == "remove_timestamps":
            self.lost.append("drops columns %s.created_at, %s.updated_at" % (table, table))
        elif name == "change_column":
            kind = self._name(call, 2)
            self.lost.append(
                "changes the type of column %s.%s to %s (may narrow it)" % (table, self._name(call, 1), kind)
            )
        elif name == "change_column_null":
            if len(call.positional) > 3:
                self.lost.append("overwrites the NULLs of column %s.%s" % (table, self._name(call, 1)))
        elif name == "disable_extension":
            self.lost.append("drops extension %s with CASCADE (and what uses it)" % table)
        elif name == "execute":
            self._execute(call, "execute")
        elif name in ("create_table", "create_join_table"):
            if "force" in call.labels:
                self.lost.append("drops table %s first if it exists (%s with force:)" % (table, name))
            self._definitions(call, "create_table")
        elif name == "change_table":
            self._change_table(call, "down", conditional)
        elif name in ("say_with_time", "transaction"):
            self.ran -= 1
            self._block_of(call, "down", conditional)
        elif name == "up_only":
            self.ran -= 1  # runs only on the way up
        elif name in ("add_column", "add_reference", "add_belongs_to", "add_timestamps", "enable_extension"):
            pass
        elif name in _SAFE:
            self.ran -= name in ("say", "puts")
        elif name in _READS:
            self.ran -= 1
        else:
            self._unknown("calls %s, which the classifier cannot follow" % call.label())

    def _definitions(self, call, what):
        """A create_table block: column definitions on the block's variable."""
        if call.block is None:
            return
        var = call.block_params[0] if call.block_params else None
        for stmt in _statements(call.block.items):
            inner = _call(stmt)
            if inner is None or inner.recv != var or (inner.name not in _COLUMN_TYPES and inner.name != "index"):
                self._unknown("%s %s has a statement the classifier cannot read" % (what, self._name(call, 0)))
                return

    def _change_table(self, call, mode, conditional):
        table = self._name(call, 0)
        if call.block is None:
            return
        var = call.block_params[0] if call.block_params else None
        for stmt in _statements(call.block.items):
            inner = _call(stmt)
            if inner is None or inner.recv != var:
                self._unknown("change_table %s has a statement the classifier cannot read" % table)
                continue
            col = inner.arg(0) or "?"
            name = inner.name
            if mode == "down":
                if name == "remove":
                    for k in range(len(inner.positional)):
                        self.lost.append("drops column %s.%s" % (table, inner.arg(k) or "?"))
                elif name in ("remove_references", "remove_belongs_to"):
                    self.lost.append("drops column %s.%s_id" % (table, col))
                elif name == "remove_timestamps":
                    self.lost.append("drops columns %s.created_at, %s.updated_at" % (table, table))
                elif name == "change":
                    self.lost.append(
                        "changes the type of column %s.%s to %s (may narrow it)" % (table, col, inner.arg(1) or "?")
                    )
                elif name == "change_null" and len(inner.positional) > 2:
                    self.lost.append("overwrites the NULLs of column %s.%s" % (table, col))
                elif name in _COLUMN_TYPES or name in (
                    "index",
                    "remove_index",
                    "rename",
                    "rename_index",
                    "change_default",
                    "change_null",
                    "foreign_key",
                    "check_constraint",
                    "remove_check_constraint",
                ):
                    pass
                else:
                    self._unknown(
                        "calls %s.%s in change_table %s, which the classifier cannot follow" % (var, name, table)
                    )
                continue
            # change: what CommandRecorder runs backwards
            if name in _COLUMN_TYPES:
                if name in ("references", "belongs_to"):
                    self.lost.append("drops column %s.%s_id" % (table, col))
                elif name == "timestamps":
                    self.lost.append("drops columns %s.created_at, %s.updated_at" % (table, table))
                else:
                    cols = [inner.arg(k) or "?" for k in range(len(inner.positional))]
                    if name == "column":
                        cols = cols[:1]
                    for c in cols:
                        self.lost.append("drops column %s.%s" % (table, c))
            elif name == "remove":
                if "type" not in inner.labels:
                    self.cannot.append("t.remove in change_table %s without a type:" % table)
            elif name == "change":
                self.cannot.append("t.change of %s.%s in change_table" % (table, col))
            elif name == "change_default":
                if not ("from" in inner.labels and "to" in inner.labels):
                    self.cannot.append("t.change_default of %s.%s without from:/to:" % (table, col))
            elif name in ("index", "rename", "remove_references", "remove_belongs_to", "remove_timestamps") or name in (
                "change_null",
                "foreign_key",
                "check_constraint",
            ):
                pass
            else:
                self._unknown("calls %s.%s in change_table %s, which the classifier cannot follow" % (var, name, table))

    def change_call(self, call, conditional):
        """A call of ``change``: what ActiveRecord's CommandRecorder runs in its place on the way down."""
        name = call.name
        if call.recv is None and name in _INVERSE:
            # Its inverse takes the same arguments: classified as that call run on the way down.
            inverse = _Call(None, _INVERSE[name], call.positional, call.labels, None, [], call.condition)
            self.down_call(inverse, conditional)
            return
        if call.recv is not None:
            if name == "reset_column_information":
                return
            self._unknown("calls %s, which the classifier cannot follow" % call.label())
            return
        self.ran += 1
        table = self._name(call, 0)
        if name == "remove_column":
            if len(call.positional) < 3 and "type" not in call.labels:
                self.cannot.append("remove_column %s.%s without a type" % (table, self._name(call, 1)))
        elif name == "remove_columns":
            if "type" not in call.labels:
                self.cannot.append("remove_columns on %s without a type:" % table)
        elif name == "remove_index":
            if len(call.positional) < 2 and "column" not in call.labels:
                self.cannot.append("remove_index on %s without a column" % table)
        elif name == "remove_foreign_key":
            if len(call.positional) < 2 and "to_table" not in call.labels:
                self.cannot.append("remove_foreign_key on %s without the other table" % table)
        elif name == "remove_check_constraint":
            if len(call.positional) < 2:
                self.cannot.append("remove_check_constraint on %s without its expression" % table)
        elif name in ("change_column_default", "change_column_comment", "change_table_comment"):
            if not ("from" in call.labels and "to" in call.labels):
                self.cannot.append("%s on %s without from:/to:" % (name, table))
        elif name == "drop_table":
            if call.block is None and len(call.positional) < 2 and not call.labels:
                self.cannot.append("drop_table %s without its definition (a block or options)" % table)
        elif name == "change_column":
            self.cannot.append("change_column %s.%s" % (table, self._name(call, 1)))
        elif name == "execute":
            self.cannot.append("execute")
        elif name == "change_table":
            self._change_table(call, "change", conditional)
        elif name == "reversible":
            self.ran -= 1
            self._reversible(call, conditional)
        elif name == "up_only":
            self.ran -= 1  # runs only on the way up
        elif name in ("say_with_time", "transaction"):
            self.ran -= 1
            self._block_of(call, "change", conditional)
        elif name in (
            "remove_reference",
            "remove_belongs_to",
            "remove_timestamps",
            "drop_join_table",
            "disable_extension",
            "change_column_null",
        ):
            pass
        elif name in _SAFE:
            self.ran -= name in ("say", "puts")
        elif name in _READS:
            self.ran -= 1
        else:
            self._unknown("calls %s, which the classifier cannot follow" % call.label())

    def _reversible(self, call, conditional):
        """``reversible do |dir| dir.up {...}; dir.down {...} end``: the ``dir.down`` part runs down."""
        if call.block is None or not call.block_params:
            self._unknown("reversible without a block")
            return
        var = call.block_params[0]
        for stmt in _statements(call.block.items):
            inner = _call(stmt)
            if inner is not None and inner.recv == var and inner.name in ("up", "down") and inner.block is not None:
                if inner.name == "down":
                    self.body(inner.block.items, "down", conditional)
                continue
            if inner is not None and inner.recv is None and inner.name == "raise":
                self.statement(stmt, "down", conditional)
                continue
            self._unknown("reversible has a statement outside dir.up/dir.down the classifier cannot read")


def _class_methods(tree):
    """The migration class's methods ``{name: def node}``; raises _Unreadable when there is no one class."""
    classes = [n for n in tree.items if isinstance(n, _Node) and n.kind == "class"]
    if len(classes) != 1:
        raise _Unreadable("the file does not define exactly one migration class")
    head = _statements(classes[0].items)[0] if classes[0].items else []
    text = "".join(t.value for t in head if isinstance(t, _Tok) and isinstance(t.value, str))
    if "ActiveRecord::Migration" not in text:
        raise _Unreadable("the class does not inherit from ActiveRecord::Migration")
    methods = {}
    for node in classes[0].items:
        if isinstance(node, _Node) and node.kind == "def":
            names = [t.value for t in node.items[:3] if isinstance(t, _Tok) and t.kind in ("id", "kw")]
            name = names[1] if names[:1] == ["self"] and len(names) > 1 else (names[0] if names else None)
            methods[name] = node
    return methods


def _method_body(node):
    """The items of a ``def`` after its name and parameters."""
    stmts = _statements(node.items)
    return [item for stmt in stmts[1:] for item in stmt + [_Tok("nl", "\n", 0)]]


def classify_source(source):
    """Classify a migration file's way down. Returns the verdict (``base.verdict``)."""
    if source is None:
        return base.verdict(irreversible=True, runnable=False, reasons=["the migration file cannot be read"])
    try:
        methods = _class_methods(_tree(_tokens(source)))
        reader = _Reader()
        if "change" in methods:
            where = "change"
            reader.body(_method_body(methods["change"]), "change")
        elif "down" in methods:
            where = "down"
            reader.body(_method_body(methods["down"]), "down")
        else:
            return base.verdict(
                irreversible=True,
                reasons=[
                    "the migration has no down or change method: ActiveRecord would only delete its version, "
                    "the schema would not be reverted"
                ],
            )
    except _Unreadable as exc:
        return base.verdict(unclassified=True, reasons=["the migration's Ruby cannot be read: %s" % exc])
    lost, unknown = _db._unique(reader.lost), _db._unique(reader.unknown)
    reasons, runnable, irreversible = [], True, False
    for name, always in reader.raises:
        irreversible = True
        if always or "IrreversibleMigration" in name:
            runnable = False
            reasons.append("%s raises %s" % (where, name))
        else:
            reasons.append("%s may raise %s: the schema may not be reverted" % (where, name))
    for what in _db._unique(reader.cannot):
        irreversible, runnable = True, False
        reasons.append("ActiveRecord cannot reverse %s in change (IrreversibleMigration)" % what)
    if not irreversible and reader.ran <= 0 and not lost and not unknown:
        return base.verdict(
            irreversible=True, reasons=["%s does nothing on the way down: the schema would not be reverted" % where]
        )
    return base.verdict(
        destructive=bool(lost),
        irreversible=irreversible,
        runnable=runnable,
        reasons=_db._unique(reasons) + lost + unknown,
        unclassified=bool(unknown),
    )


# ------------------------------------------------------------------------------------- the tool

# Printed by `bin/rails runner`: which database the application's own configuration reaches.
_IDENTITY_RB = r"""
require "json"
db = ActiveRecord::Base.connection_db_config
adapter = db.adapter.to_s
out = {"adapter" => adapter}
if adapter.start_with?("sqlite")
  out["path"] = File.expand_path(db.database.to_s, Rails.root)
else
  out["row"] = ActiveRecord::Base.connection.select_rows(ENV.fetch("RR_IDENTITY_SQL")).first
end
puts "%s" + JSON.generate(out)
"""


class Rails(base.MigrationTool):
    """A Rails application's ActiveRecord migrations, run down with its own ``bin/rails``."""

    name = "rails"
    title = "Rails (ActiveRecord)"
    needs = "migrations"
    numeric = True
    engines = ("postgresql", "mysql", "sqlite")
    runs = (
        "`bin/rails db:migrate:down VERSION=` one version at a time, in the application's directory "
        "(`migrations:`), with `DATABASE_URL` and `RAILS_ENV`; the version is read from `schema_migrations`"
    )
    recognises = (
        "each db/migrate file's Ruby: `raise ActiveRecord::IrreversibleMigration` (cannot run); in `down` or "
        "`reversible`'s `dir.down`, drop_table, remove_column(s), remove_reference, change_column and `execute` "
        "of data-losing SQL; in `change`, create_table/add_column undone as drops, and execute, change_column, "
        "remove_column without a type as irreversible; any other call is unclassified"
    )
    settings_doc = {
        "rails_env": "RAILS_ENV for the application's commands; default production.",
        "command": "The command that runs Rails (e.g. `bundle exec rails`); default the application's bin/rails, "
        "else rails.",
        "table": "The migrations table when the application renames it; default schema_migrations.",
    }

    def __init__(self, module, conn, client):
        base.MigrationTool.__init__(self, module, conn, client)
        self.table = self.settings.get("table") or "schema_migrations"
        if not _TABLE_NAME.match(str(self.table)):
            raise base.Fail("settings.table %r is not a table name: use letters, digits and _" % str(self.table)[:60])
        self.rails_env = str(self.settings.get("rails_env") or "production")
        if not _ENV_NAME.match(self.rails_env):
            raise base.Fail("settings.rails_env %r is not an environment name" % self.rails_env[:60])
        self.migrate_dir = os.path.join(self.cwd, "db", "migrate")
        if not os.path.isdir(self.migrate_dir):
            raise base.Fail(
                "%s has no db/migrate directory: database.migrations must be the Rails application's directory"
                % self.cwd
            )
        self.files = self._scan()
        self.applied = None
        self._identity = None

    def _scan(self):
        files = {}
        for name in sorted(os.listdir(self.migrate_dir)):
            m = _MIGRATION_FILE.match(name)
            if m:
                if m.group(1) in files:
                    raise base.Fail("version %s has two migration files in %s" % (m.group(1), self.migrate_dir))
                files[m.group(1)] = name
        return files

    # -- the application's command and environment
    def argv(self):
        return self.find_command("rails", os.path.join("bin", "rails"))

    def rails_url(self):
        """The manifest's database in Rails' own URL form (for DATABASE_URL; the password stays in it,
        in the environment only)."""
        c = self.conn
        if c["dialect"] == "sqlite":
            return "sqlite3:" + os.path.abspath(self.client.sqlite_path())
        scheme = "postgresql" if c["dialect"] == "postgresql" else "mysql2"
        auth = base.userinfo(c)
        host = c.get("host") or ""
        query = urlsplit(self.p["url"]).query
        if host.startswith("/"):
            query = "&".join(x for x in query.split("&") if x and not x.startswith("host=")) + "&host=" + quote(host)
            query, host = query.lstrip("&"), ""
        port = ":%s" % c["port"] if c.get("port") and host else ""
        return "%s://%s%s%s/%s%s" % (
            scheme,
            auth,
            host,
            port,
            quote(c["database"], safe=""),
            "?" + query if query else "",
        )

    def app_env(self, extra=None):
        url = self.rails_url()
        env = {"DATABASE_URL": url, "RAILS_ENV": self.rails_env}
        if self.p.get("url_env"):
            env[self.p["url_env"]] = url
        env.update(extra or {})
        return env

    def rails(self, args, env=None):
        return self.command(self.argv() + list(args), env=env)

    # -- the interface
    def current(self):
        self.applied = None
        if not self.client.has_table(self.table):
            self.applied = []
            return base.BASE
        versions = []
        for row in self.client.rows("SELECT version FROM %s" % self.table):
            v = str(row[0]).strip()
            if not v.isdigit():
                raise base.Fail("%s holds version %r, which is not a Rails migration version" % (self.table, v[:40]))
            versions.append(v)
        self.applied = sorted(set(versions), key=int)
        return self.applied[-1] if self.applied else base.BASE

    def migration_identity(self):
        """The database the application's own configuration reaches (config/database.yml may override
        DATABASE_URL with a ``url:``), read once with ``bin/rails runner``."""
        if self._identity is not None:
            return self._identity
        extra = {}
        if self.conn["dialect"] != "sqlite":
            extra["RR_IDENTITY_SQL"] = _db.IDENTITY_SQL[self.conn["dialect"]]
        rc, out, err = self.rails(["runner", _IDENTITY_RB % _MARK], env=extra)
        line = [x for x in (out or "").splitlines() if x.startswith(_MARK)]
        if rc != 0 or not line:
            why = self.tail(err or out)
            raise base.Fail(
                "the Rails application cannot say which database it reaches (bin/rails runner): %s; nothing was changed"
                % why,
                detail=why,
            )
        answer = json.loads(line[-1][len(_MARK) :])
        adapter = answer.get("adapter") or ""
        if adapter.startswith("sqlite"):
            path = answer.get("path") or ""
            try:
                self._identity = _db.sqlite_identity(path)
            except OSError:
                self._identity = {"dialect": "sqlite", "file": path, "device": "", "inode": "(missing)"}
        elif adapter.startswith("postgres") or adapter.startswith("mysql") or adapter == "trilogy":
            dialect = "postgresql" if adapter.startswith("postgres") else "mysql"
            if dialect != self.conn["dialect"]:
                self._identity = {"dialect": dialect, "database": "(the application's %s database)" % adapter}
            else:
                self._identity = _db.identity_from_row(dialect, answer.get("row") or [])
        else:
            self._identity = {"dialect": adapter, "database": "(adapter %s)" % adapter}
        return self._identity

    def steps(self, current, target, live_schema=None):
        if current == target:
            return []
        if self.applied is None:
            self.current()
        applied = self.applied
        for rev in (current, target):
            if rev != base.BASE and not str(rev).isdigit():
                raise base.Fail(
                    "%r is not a Rails migration version (the digits of db/migrate/<version>_name.rb)" % rev
                )
        if target != base.BASE and target not in applied:
            raise base.Fail(
                "version %s is not applied in this database (%s): choose one of %s or base"
                % (target, self.table, ", ".join(applied[-5:]) or "none")
            )
        low = -1 if target == base.BASE else int(target)
        top = None if current == base.BASE else int(current)
        if top is not None and top < low:
            raise base.Fail("version %s is above the database's version %s: nothing to roll back" % (target, current))
        chain = [v for v in applied if int(v) > low and (top is None or int(v) <= top)]
        below = [v for v in applied if int(v) <= low]
        steps = []
        for k in range(len(chain) - 1, -1, -1):
            version = chain[k]
            to = chain[k - 1] if k > 0 else (below[-1] if below else base.BASE)
            name = self.files.get(version)
            step = {"id": version, "revision": version, "to": to}
            if name is None:
                step.update(
                    base.verdict(
                        irreversible=True,
                        runnable=False,
                        reasons=["version %s is applied but db/migrate has no file for it (NO FILE)" % version],
                    )
                )
                step["source"] = None
            else:
                step.update(classify_source(base.read_text(os.path.join(self.migrate_dir, name))))
                step["source"] = "db/migrate/" + name
            steps.append(step)
        return steps

    def downgrade(self, to, step):
        self.applied = None
        return self.rails(["db:migrate:down", "VERSION=%s" % step["revision"]])


TOOL = Rails
