r"""The short form of a combined search: ``shoebox search "2:dog + beach - people"``.

A query is one or more *terms* joined by ``+`` and ``-``. Each term becomes one entry of the
search's weighted list: a text, an image already in the library, or a local photo that the CLI
uploads first.

Grammar (informally; the Lark grammar is ``GRAMMAR`` below)::

    query   =  [ "+" | "-" ]  term  { ( "+" | "-" )  term }
    term    =  [ weight ]  atom
    weight  =  NUMBER ":"                    2:   0.5:   .5:
    atom    =  words                         sunset over water
            |  "quoted text"                 "c++ book"
            |  id:UUID                       id:123e4567-e89b-12d3-a456-426614174000
            |  photo:PATH | photo:"PATH"     photo:~/pics/cat.jpg

Atoms

- A run of words is one text term: ``sunset over water + dog`` is the texts "sunset over water"
  and "dog". Whitespace between words, however much and of whatever kind, becomes one space.
- ``"quoted text"`` is taken literally, whitespace included, and is the way to search for text
  holding ``+``, ``-``, colons, ``id:`` or ``photo:``. Inside quotes ``\"`` is a quote and ``\\``
  a backslash; any other backslash stays as it is (so ``photo:"C:\pics\a.jpg"`` works). Empty
  quotes are an error.
- ``id:UUID`` is an image in the library, by its id: a UUID in any case, with or without dashes,
  normalised to lower case with dashes. Anything else after ``id:`` is an error.
- ``photo:PATH`` is a local file the CLI uploads: PATH runs to the next whitespace, or is a quoted
  string when it holds spaces. ``~`` is left as it is (the CLI expands it).
- ``id:`` and ``photo:`` are lower case, and are written right against what follows them.

Operators

- ``+`` or ``-`` is an operator when it *starts* a token: at the start of the query, after
  whitespace, or right after a closing quote. Anywhere else it is part of the word, so
  ``t-shirt``, ``well-lit room``, ``dog-friendly``, ``c++`` and even ``dog+cat`` are plain words,
  while ``dog -people`` and ``dog - people`` are both dog minus people.
- The first term may carry a sign (``-people`` alone is a negative term); every later term needs
  one. Two terms side by side without an operator (``dog "cat"``, ``dog id:…``) are an error.
- Two operators in a row (``dog + - cat``, ``--dog``) are an error, not a double sign: it is
  far more often a slip than a wish for a minus, and ``dog - cat`` says it plainly.

Weights

- A weight is a decimal number (``2``, ``0.5``, ``.5``) and a colon, written right against its
  atom: ``2:dog``, ``0.5:"c++"``, ``3:id:…``. Without one a term weighs 1. The operator's sign
  multiplies it: ``- 2:people`` and ``-2:people`` weigh −2.
- A number and colon followed by a digit is not a weight but part of a word, so times and
  ratios (``12:30``, ``16:9``, ``2:1``) stay text. To weigh a term that starts with a digit,
  quote it: ``2:"3d printer"``.
- A number and colon at the start of any word is a weight, and so is ``id:``/``photo:`` a
  keyword, wherever the word stands: ``dog 2:cat`` and ``dog id:…`` are errors (a missing
  operator), not text, and ``top 10: beaches`` must be quoted. This keeps a forgotten ``+``
  from being searched for as words.
- A weight of 0 is an error (it means nothing; drop the term), as is a space between a weight
  and its atom (``2: dog``) or a weight with no atom after it.

Limits: at most 16 terms and 2000 characters.

A query with no operators, weights or keywords, such as ``dog on a beach``, is a single text
term of weight 1, the same search as before this syntax existed.

Errors are :class:`QuerySyntaxError` (a ``ValueError``), whose message names the column, says
in words what was expected, and repeats the query with a caret under the spot.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

__all__ = ["GRAMMAR", "MAX_LENGTH", "MAX_TERMS", "QuerySyntaxError", "QueryTerm", "parse_query"]

MAX_TERMS = 16
MAX_LENGTH = 2000

# The basic (context-free) lexer on purpose: every token means the same thing wherever it stands,
# so `dog 2:cat` is a missing operator rather than the words "dog 2:cat", and the docstring's
# rules can be stated per word instead of per parser state.
GRAMMAR = r"""
start: op? term (op term)*
op: PLUS | MINUS
term: WEIGHT? atom
?atom: words | quoted | image_id | photo
words: WORD+
quoted: STRING
image_id: ID
photo: PHOTO_PATH | PHOTO_KW STRING

PLUS: "+"
MINUS: "-"
// Priorities: WORD would match a weight too, and PHOTO_PATH must win over its bare keyword.
// Not before a digit, so that 12:30 and 16:9 stay words.
WEIGHT.3: /(?:\d+(?:\.\d+)?|\.\d+):(?!\d)/
STRING: /"(?:[^"\\]|\\.)*"/s
ID.2: /id:[^\s"]*/
PHOTO_PATH.2: /photo:[^\s"]+/
// The quoted form: the keyword alone, its STRING follows.
PHOTO_KW.1: /photo:/
// Cannot start with an operator or a quote; may contain both + and - after that.
WORD: /(?!id:|photo:)[^\s"+\-][^\s"]*/

%ignore /\s+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", lexer="basic")

_OPERATORS = ("PLUS", "MINUS")
_ESCAPE = re.compile(r'\\(["\\])')
# A caret line is only readable if the quoted query fits on a terminal line.
_WINDOW = 72


@dataclass(frozen=True)
class QueryTerm:
    """One weighted term of a combined search."""

    kind: Literal["text", "image_id", "photo"]
    value: str
    weight: float = 1.0

    def as_api(self) -> dict:
        """The term as the search API takes it; a photo has to be uploaded first, so it has none."""
        if self.kind == "text":
            return {"text": self.value, "weight": self.weight}
        if self.kind == "image_id":
            return {"image_id": self.value, "weight": self.weight}
        raise ValueError(f"a photo term ({self.value}) must be uploaded before it can be sent to the API")


class QuerySyntaxError(ValueError):
    """A query that does not follow the syntax; `str()` is the message with a caret line."""

    def __init__(self, reason: str, query: str, pos: int) -> None:
        self.reason = reason
        self.query = query
        self.pos = pos
        self.column = pos + 1
        super().__init__(f"column {self.column}: {reason}\n{_caret(query, pos)}")


def parse_query(text: str) -> list[QueryTerm]:
    """The terms of a search query written in the syntax above."""
    if len(text) > MAX_LENGTH:
        raise QuerySyntaxError(
            f"the query is {len(text)} characters long; the most is {MAX_LENGTH}", text, MAX_LENGTH
        )
    if not text.strip():
        raise QuerySyntaxError("the query is empty", text, 0)
    try:
        # Lexed up front as well, so that a parse error can say what came before the bad spot.
        tokens = list(_PARSER.lex(text))
    except UnexpectedCharacters as error:
        raise _explain(error, text, []) from None
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise _explain(error, text, tokens) from None
    return _terms(tree, text)


def _terms(tree: Tree, text: str) -> list[QueryTerm]:
    terms: list[QueryTerm] = []
    sign = 1.0
    for child in tree.children:
        if child.data == "op":
            sign = -1.0 if child.children[0].type == "MINUS" else 1.0
            continue
        if len(terms) == MAX_TERMS:
            raise QuerySyntaxError(
                f"too many terms; a query holds at most {MAX_TERMS}", text, _first_token(child).start_pos
            )
        terms.append(_term(child, sign, text))
        sign = 1.0
    return terms


def _term(term: Tree, sign: float, text: str) -> QueryTerm:
    *prefix, atom = term.children
    weight = 1.0
    if prefix:
        (token,) = prefix
        weight = float(token[:-1])
        if weight == 0:
            raise QuerySyntaxError("a weight of 0 means nothing; drop the term", text, token.start_pos)
        if _first_token(atom).start_pos != token.end_pos:
            raise QuerySyntaxError(
                f"a weight is written right against its term, without a space: {token}{_first_token(atom)}",
                text,
                token.end_pos,
            )
    kind, value = _atom(atom, text)
    return QueryTerm(kind, value, sign * weight)


def _atom(atom: Tree, text: str) -> tuple[Literal["text", "image_id", "photo"], str]:
    tokens = atom.children
    if atom.data == "words":
        return "text", " ".join(tokens)
    if atom.data == "quoted":
        return "text", _unquote(tokens[0], text)
    if atom.data == "image_id":
        (token,) = tokens
        raw = token[len("id:") :]
        try:
            return "image_id", str(uuid.UUID(raw))
        except ValueError:
            what = f"'{raw}' is not an image id" if raw else "id: needs an image id"
            raise QuerySyntaxError(
                f"{what}; expected a UUID such as 123e4567-e89b-12d3-a456-426614174000",
                text,
                token.start_pos + len("id:"),
            ) from None
    if len(tokens) == 1:
        return "photo", tokens[0][len("photo:") :]
    keyword, path = tokens
    if path.start_pos != keyword.end_pos:
        raise QuerySyntaxError(
            "expected a file path right after photo:, without a space", text, keyword.end_pos
        )
    return "photo", _unquote(path, text)


def _unquote(token: Token, text: str) -> str:
    value = _ESCAPE.sub(r"\1", token[1:-1])
    if not value.strip():
        raise QuerySyntaxError("the quotes hold nothing; put the text between them", text, token.start_pos)
    return value


def _first_token(tree: Tree) -> Token:
    first = tree.children[0]
    return first if isinstance(first, Token) else _first_token(first)


def _explain(error: UnexpectedInput, text: str, tokens: list[Token]) -> QuerySyntaxError:
    if isinstance(error, UnexpectedCharacters):
        pos = error.pos_in_stream
        if text[pos] == '"':
            return QuerySyntaxError('this quote is never closed; add a " at the end of the text', text, pos)
        return QuerySyntaxError(f"unexpected character {text[pos]!r}", text, pos)
    if not isinstance(error, UnexpectedToken):
        return QuerySyntaxError(str(error), text, 0)
    found = error.token
    at_end = found.type == "$END"
    # Lark's end token borrows the last real token's position; the caret belongs after the query.
    pos = len(text.rstrip()) if at_end else found.start_pos
    before = tokens[-1] if at_end else next((t for t in reversed(tokens) if t.end_pos <= pos), None)
    what = "the query ends there" if at_end else f"found {_describe(found)}"
    if before is not None and before.type in _OPERATORS:
        if found.type in _OPERATORS:
            return QuerySyntaxError(f"two operators in a row; expected a term after '{before}'", text, pos)
        return QuerySyntaxError(f"expected a term after '{before}', but {what}", text, pos)
    if before is not None and before.type == "WEIGHT":
        return QuerySyntaxError(f"expected a term right after the weight {before}, but {what}", text, pos)
    if before is not None and before.type == "PHOTO_KW":
        if not at_end and found.start_pos != before.end_pos:
            return QuerySyntaxError(
                "expected a file path right after photo:, without a space", text, before.end_pos
            )
        return QuerySyntaxError(f"expected a file path right after photo:, but {what}", text, pos)
    if before is not None and before.type == "ID" and before == "id:" and not at_end:
        return QuerySyntaxError("expected an image id right after id:, without a space", text, before.end_pos)
    if "PLUS" in error.expected:
        hint = " (quote it to search for it as text)" if found.type in ("WEIGHT", "ID", "PHOTO_PATH") else ""
        return QuerySyntaxError(f"expected + or - between two terms, but {what}{hint}", text, pos)
    return QuerySyntaxError(f"unexpected {_describe(found)}", text, pos)


def _describe(token: Token) -> str:
    shown = token if len(token) <= 24 else token[:23] + "…"
    if token.type == "WEIGHT":
        return f"the weight {shown}"
    return f"'{shown}'"


def _caret(query: str, pos: int) -> str:
    # Tabs and newlines would push the caret off its character.
    line = re.sub(r"\s", " ", query)
    start = max(0, min(pos - _WINDOW // 2, len(line) - _WINDOW))
    shown = line[start : start + _WINDOW]
    lead = "…" if start > 0 else ""
    tail = "…" if start + _WINDOW < len(line) else ""
    return f"  {lead}{shown}{tail}\n  {' ' * (len(lead) + pos - start)}^"
