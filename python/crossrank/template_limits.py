"""What a chat-template render may build.

A render (see chat_template) is refused, with :class:`TooLarge`, before it makes a value longer
than :data:`LIMIT` characters: :func:`sandbox` builds a jinja2 sandbox whose operators, ``~``,
filters, method calls, ``str.format``, printed values and output are measured, and
:func:`text_size` measures what a render is given, from which its limit is set. The sandbox builds
on jinja2 3.1's private names; where they differ, it is jinja2's own, with a warning.
"""
from __future__ import annotations

import functools
import io
import pprint
import re
import types
import warnings
from collections.abc import Collection
from contextvars import ContextVar
from functools import lru_cache
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["INPUT_FACTOR", "LIMIT", "RENDER_CHARS", "TooLarge", "sandbox", "text_size"]

# A step limit does not bound memory: one C call can allocate gigabytes ('x' * 10**10, a text
# doubled 40 times in a loop, '{}'.format(...) or a join repeating it) within a few steps, and
# printing a list that holds another twice, forty levels deep, makes terabytes. Every way a template
# makes a value is measured before the value is made (operators, ~, filters, method calls,
# str.format, what it prints and its whole output) and refused past this many characters plus
# INPUT_FACTOR times the size of the texts it is given: a reranker's template renders a few KB
# around them, and a 15 MB document must still render. A list costs 8 per item (its pointers), a
# number its digits. Growth by a bounded factor (escaping a text, upper-casing it) is measured
# after: it cannot compound past the limit.
RENDER_CHARS = 4 << 20
INPUT_FACTOR = 4
#: The current render's limit, which a render sets (renders run on several threads; outside one,
#: compile-time constant folding, the fixed part).
LIMIT: ContextVar[int] = ContextVar("crossrank_render_chars", default=RENDER_CHARS)
# Filters that rearrange items without turning them into text: their input is not walked.
_SHAPE_FILTERS = frozenset({"abs", "attr", "batch", "count", "d", "default", "first", "float", "int", "items",
                            "last", "length", "list", "map", "max", "min", "random", "reject", "rejectattr",
                            "reverse", "round", "select", "selectattr", "slice", "sum", "unique"})
# A %-conversion: its width and precision (digits, or * for one taken from the arguments).
_PERCENT_CONVERSION = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?.", re.S)
# What one conversion adds besides its width, precision and argument (a float's 309 digits for %f).
_CONVERSION_CHARS = 400
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # where str.splitlines() cuts


class TooLarge(Exception):
    """A value a template was about to build is longer than the render's limit (an Exception, not a
    BaseException: jinja2's compile-time constant folding must take it as 'not a constant')."""


def _refuse(size: float, what: str, room: Optional[float] = None) -> None:
    if size > (LIMIT.get() if room is None else room):
        raise TooLarge(what)


def _len_size(value: Any) -> int:
    """What a new value costs without walking it: a text's or list's length, a number's digits."""
    if isinstance(value, int):
        return value.bit_length() // 3
    if isinstance(value, (list, tuple, dict)):
        return 8 * len(value)
    return len(value) if isinstance(value, (str, bytes)) else 0


def text_size(value: Any, limit: Optional[float] = None, per_item: int = 2, per_level: int = 0) -> float:
    """About ``len(str(value))`` (``per_item``, ``per_level``: a JSON's separators and indentation),
    where an item counts each time it is reached (``[s, s]`` is twice ``s``), given up once past
    ``limit`` (default: the render's). Shared lists are measured once, so that one holding another
    twice, forty levels deep, costs forty steps to find that it would print as terabytes."""
    from jinja2.utils import Namespace

    limit = LIMIT.get() if limit is None else limit
    known: Dict[Tuple[int, int], float] = {}  # by identity (and depth, which JSON's indentation costs)

    def size(item: Any, depth: int) -> float:
        total = per_item + depth * per_level
        if isinstance(item, (str, bytes)):
            return total + len(item)
        if isinstance(item, int):
            return total + item.bit_length() // 3
        if isinstance(item, Namespace):  # printed as its attributes
            item = item._Namespace__attrs
        if isinstance(item, Mapping):
            items: Iterable[Any] = chain.from_iterable(item.items())
        elif isinstance(item, Collection):
            items = item
        else:
            return total
        key = (id(item), depth if per_level else 0)
        if key in known:  # shared, or holding itself (printed as [...])
            return known[key]
        known[key] = total
        if isinstance(item, (list, tuple)) and set(map(type, item)) <= {str}:  # texts: measured without a walk
            total += len(item) * (per_item + (depth + 1) * per_level) + sum(map(len, item))
        else:
            for x in items:
                total += size(x, depth + 1)
                if total > limit:
                    break
        known[key] = total
        return total

    return size(value, 0)


def _percent_size(fmt: Union[str, bytes], args: Any) -> float:
    """At most ``len(fmt % args)``: each conversion gives at most its width, precision and widest argument."""
    if isinstance(fmt, bytes):
        fmt = fmt.decode("latin-1")
    values = tuple(args.values()) if isinstance(args, Mapping) else args if isinstance(args, tuple) else (args,)
    widest = max((text_size(v) for v in values), default=0)
    stars = max((abs(v) for v in values if isinstance(v, int)), default=0)
    size = len(fmt)
    for width, precision in _PERCENT_CONVERSION.findall(fmt):
        size += widest + _CONVERSION_CHARS + sum(stars if n == "*" else int(n or 0) for n in (width, precision))
        if size > LIMIT.get():
            break
    return size


def _binop_size(operator: str, left: Any, right: Any) -> float:
    """At most the size of ``left operator right`` (see SandboxedEnvironment.intercepted_binops)."""
    if operator == "+":
        return _len_size(left) + _len_size(right)
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            return _len_size(left) + _len_size(right)
        count, other = (left, right) if isinstance(left, int) else (right, left)
        return count * _len_size(other) if isinstance(count, int) else 0
    if operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            return left.bit_length() * right // 3
        return 0
    return _percent_size(left, right) if isinstance(left, (str, bytes)) else 0  # %


def _number(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _lines(text: Any) -> int:
    return 1 + sum(map(str(text).count, _LINE_BREAKS))


def _replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    text, old, new = str(s), str(old), str(new)
    found = text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _join_size(sep: Any, items: List[Any]) -> int:
    try:
        return len(sep) * len(items) + sum(map(len, items))
    except TypeError:  # not texts: join refuses them itself
        return 0


def _translate_size(s: Any, table: Any, *rest: Any) -> int:
    values = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
    return len(s) * max([len(v) for v in values if isinstance(v, (str, bytes))] + [1])


# Filters whose result grows with an argument, not by a bounded factor: their size before they run
# (the arguments as the filter's own, after a context argument).
_FILTER_SIZES: Dict[str, Callable[..., float]] = {
    "center": lambda value, width=80: text_size(value) + _number(width),
    "indent": lambda s, width=4, first=False, blank=False: text_size(s) + _lines(s) * (
        text_size(width) if isinstance(width, str) else _number(width)),
    "wordwrap": lambda s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True: (
        (text_size(s) + 1) * (1 + len(wrapstring if isinstance(wrapstring, str) else "\n"))),
    "replace": _replace_size,
    "format": lambda value, *args, **kwargs: _percent_size(str(value), kwargs or args),
    "join": lambda value, d="", attribute=None: text_size(value) + len(value) * text_size(d),
    "batch": lambda value, linecount, fill_with=None: 0 if fill_with is None else 8 * _number(linecount),
    "sum": lambda iterable, attribute=None, start=0: text_size(iterable) if isinstance(start, (list, tuple)) else 0,
    "urlize": lambda value, trim_url_limit=None, nofollow=False, target=None, rel=None, extra_schemes=None: (
        text_size(value) + sum(map(str(value).count, ".:@")) * (text_size(target) + text_size(rel))),
    "tojson": lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: text_size(
        x, per_item=3 + (sum(map(len, separators)) if separators else 4),  # quotes, newline, separators
        per_level=len(indent) if isinstance(indent, str) else _number(indent)),
}
# The same for str and bytes methods (and int.to_bytes); the others make at most a bounded multiple.
_METHOD_SIZES: Dict[str, Callable[..., float]] = {
    **dict.fromkeys(("center", "ljust", "rjust", "zfill"), lambda s, width=0, *rest: max(len(s), _number(width))),
    "expandtabs": lambda s, tabsize=8: len(s) * max(1, _number(tabsize)),
    "replace": _replace_size,
    "join": _join_size,
    "translate": _translate_size,
    "to_bytes": lambda n, length=1, *rest, **options: _number(length),
}
# The same for a chat template's globals (what is refused, its size), with their parameters.
_GLOBAL_SIZES: Dict[str, Tuple[str, Callable[..., float]]] = {
    "raise_exception": ("raise_exception()'s message", lambda message: text_size(message)),
    # CPython's strftime gives up past 256 characters per character of the format
    "strftime_now": ("strftime_now()'s text", lambda fmt: 256 * _len_size(fmt)),
}


def _bounded_filter(name: str, func: Callable[..., Any], skip: int) -> Callable[..., Any]:
    """``func`` with its input walked before it is turned into text, its size checked before it
    runs where it grows with an argument, and its result measured (``skip``: 1 when its first
    argument is the context, eval context or environment)."""
    size = _FILTER_SIZES.get(name)

    @functools.wraps(func)  # keeps the pass_context (etc.) mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if name in ("join", "sum") and len(args) > skip:  # both consume their input: measured once, as a list
            args = (*args[:skip], list(args[skip]), *args[skip + 1:])
        if name not in _SHAPE_FILTERS:
            for arg in (*args[skip:], *kwargs.values()):
                _refuse(text_size(arg), f"the text of the {name!r} filter's input")
        if size is not None:
            _refuse(size(*args[skip:], **kwargs), f"the {name!r} filter's result")
        result = func(*args, **kwargs)
        _refuse(_len_size(result), f"the {name!r} filter's result")
        return result

    return bounded


def _bounded_global(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its size (_GLOBAL_SIZES) checked before it runs."""
    what, size = _GLOBAL_SIZES[name]

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        try:
            needed = size(*args, **kwargs)
        except TypeError:  # wrong arguments: func's own error says which
            return func(*args, **kwargs)
        _refuse(needed, what)
        return func(*args, **kwargs)

    return bounded


class _CountedText(io.StringIO):
    """A StringIO that refuses to hold more than the render's limit."""

    def write(self, text: str) -> int:
        _refuse(self.tell() + len(text), "the 'pprint' filter's result")
        return super().write(text)


def _pprint(value: Any) -> str:
    """jinja2's ``pprint`` (``pprint.pformat``), written to a counted buffer: its indentation can
    repeat a long dict key on every line."""
    out = _CountedText()
    pprint.PrettyPrinter(stream=out).pprint(value)
    return out.getvalue()[:-1]


def _printed(value: Any) -> Any:
    """The environment's ``finalize``: what ``{{ value }}`` prints is measured first."""
    if not isinstance(value, str):
        _refuse(text_size(value), "a printed value")
    return value


# Each part of the bounded sandbox at work (~, *, str.format, a filter given the eval context, a
# printed namespace), rendered once by it and by jinja2's own sandbox.
_PROBE = "{% set a, f = 'a', '{}' %}{{ (a ~ 'b') * 2 }}{{ f.format(1) }}{{ [a, 'c'] | join }}{{ namespace(e=a) }}"


@lru_cache(maxsize=None)
def _bounded_sandbox() -> Optional[type]:
    """The bounded sandbox class (built on first use, jinja2 being imported then), or ``None``, with
    a warning, where jinja2's internals are not those it builds on."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        bounded = _build_sandbox()
        # Internals changed in behaviour, not only in name, show here too.
        if (bounded(filters={}, globals={}).from_string(_PROBE).render()
                == ImmutableSandboxedEnvironment().from_string(_PROBE).render()):
            return bounded
        reason = "it renders a test template differently"
    except Exception as exc:  # a private name gone (ImportError, AttributeError) or changed (TypeError, ...)
        reason = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"chat template renders are not size-bounded with jinja2 {_jinja2_version()}, whose internals "
                  f"differ from those crossrank builds on ({reason}); only their step limit applies",
                  RuntimeWarning, stacklevel=2)
    return None


def _jinja2_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jinja2")
    except PackageNotFoundError:
        return "(version unknown)"


def _build_sandbox() -> type:
    """jinja2's ImmutableSandboxedEnvironment with the values a render makes measured."""
    from jinja2.compiler import CodeGenerator, optimizeconst
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
    from jinja2.utils import _PassArg
    from markupsafe import Markup

    class Formatter(SandboxedFormatter):
        """str.format: each field measured before it is formatted, and the fields counted."""

        def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
            self.room = LIMIT.get() - len(format_string)
            return super().vformat(format_string, args, kwargs)

        def format_field(self, value: Any, format_spec: str) -> Any:
            spec = sum(int(n) for n in re.findall(r"\d+", format_spec))  # width, precision
            _refuse(text_size(value) + spec + _CONVERSION_CHARS, "a str.format() field", self.room)
            text = super().format_field(value, format_spec)
            self.room -= len(text)
            return text

    class EscapeFormatter(Formatter, SandboxedEscapeFormatter):
        pass

    class Generator(CodeGenerator):
        @optimizeconst
        def visit_Concat(self, node: Any, frame: Any) -> None:
            # jinja2's (a ~ b ~ c is str_join((a, b, c))), with the parts measured before the join
            if frame.eval_ctx.volatile:
                func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
            else:
                func_name = "markup_join" if frame.eval_ctx.autoescape else "str_join"
            self.write(f"{func_name}(environment.measure_concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write(")))")

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        code_generator_class = Generator
        intercepted_binops = frozenset(("+", "*", "%", "**"))

        def __init__(self, *, filters: Mapping[str, Callable[..., Any]], globals: Mapping[str, Any],
                     **options: Any) -> None:
            super().__init__(finalize=_printed, **options)
            self.filters.update(filters, pprint=_pprint)
            for name, func in list(self.filters.items()):
                self.filters[name] = _bounded_filter(name, func, 1 if _PassArg.from_obj(func) else 0)
            self.globals.update({name: _bounded_global(name, value) if name in _GLOBAL_SIZES else value
                                 for name, value in globals.items()})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _refuse(_binop_size(operator, left, right), f"a value with {operator!r}")
            result = super().call_binop(context, operator, left, right)
            _refuse(_len_size(result), f"a value with {operator!r}")
            return result

        def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", None)
            size = _METHOD_SIZES.get(name) if isinstance(owner, (str, bytes, int)) and name else None
            if size is not None:
                if name == "join" and args:  # its items, once, as a list
                    args = (list(args[0]), *args[1:])
                options = {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}  # jinja2's
                _refuse(size(owner, *args, **options), f"{type(owner).__name__}.{name}()'s result")
            result = super().call(context, obj, *args, **kwargs)
            _refuse(_len_size(result), f"{name}()'s result" if name else "a call's result")
            return result

        def measure_concat(self, parts: Tuple[Any, ...]) -> Tuple[Any, ...]:
            _refuse(sum(text_size(part) for part in parts), "a text with '~'")
            return parts

        def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
            # The output, and each block's text ({% set %}...{% endset %}, a macro, a {% filter %}
            # body), joined here: counted as it comes, so that a loop printing a long text stops.
            room, kept = LIMIT.get(), []
            for part in parts:
                room -= len(part)
                if room < 0:
                    raise TooLarge("a rendered text")
                kept.append(part)
            return "".join(kept)

        def wrap_str_format(self, value: Any) -> Optional[Callable[..., str]]:
            # jinja2's, with the formatters above
            if not (isinstance(value, (types.MethodType, types.BuiltinMethodType))
                    and value.__name__ in ("format", "format_map") and isinstance(value.__self__, str)):
                return None
            text = value.__self__
            formatter = EscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) else Formatter(self)
            is_format_map = value.__name__ == "format_map"

            def wrapper(*args: Any, **kwargs: Any) -> str:
                if is_format_map:
                    if kwargs:
                        raise TypeError("format_map() takes no keyword arguments")
                    if len(args) != 1:
                        raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                    args, kwargs = (), args[0]
                return type(text)(formatter.vformat(text, args, kwargs))

            return functools.update_wrapper(wrapper, value)

    return BoundedSandbox


def sandbox(filters: Mapping[str, Callable[..., Any]], globals: Mapping[str, Any], **options: Any) -> Any:
    """jinja2's ImmutableSandboxedEnvironment (``options`` as its own) with ``filters`` and
    ``globals`` added, in which every value a render makes is measured and refused with
    :class:`TooLarge` past :data:`LIMIT`; jinja2's own, unbounded, where its internals differ from
    3.1's (a RuntimeWarning says so once)."""
    bounded = _bounded_sandbox()
    if bounded is None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(**options)
        env.filters.update(filters)
        env.globals.update(globals)
        return env
    return bounded(filters=filters, globals=globals, **options)
