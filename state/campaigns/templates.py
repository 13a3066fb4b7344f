"""Message templates: Jinja2 in a sandbox, checked completely when definitions load.

Every template is compiled at load time in a `SandboxedEnvironment` with `StrictUndefined`.
A syntax error, a variable outside the context below, or a contact field that may be
missing and has no declared fallback is a `DefinitionError` naming the file and path,
never a send-time surprise. The context a template sees:

| name | what |
|---|---|
| `contact` | the contact's kept profile fields (`first_name`, `email`, ...) plus `id`; a missing field takes its declared fallback |
| `segment` | `id`, `name` of the trigger segment |
| `change` | `at` (ISO-8601 UTC), `direction` (`enter`/`exit`) |
| `products` | items of the latest checkout or order (a list, possibly empty) |
| `variant` | name of the A/B variant (empty string without variants) |

The analysis also tells the compiler which profile fields to keep (`Keep.profile_fields`)
and whether the latest order/checkout items are needed at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from ..errors import DefinitionError

__all__ = ["CompiledTemplate", "TemplateInfo", "compile_template", "CONTEXT_NAMES",
           "SEGMENT_FIELDS", "CHANGE_FIELDS", "render"]

CONTEXT_NAMES = frozenset({"contact", "segment", "change", "products", "variant"})
SEGMENT_FIELDS = frozenset({"id", "name"})
CHANGE_FIELDS = frozenset({"at", "direction"})
_GUARD_FILTERS = frozenset({"default", "d"})
_DICT_METHODS = frozenset({"items", "keys", "values", "get", "copy", "update", "pop", "setdefault"})
_GUARD_TESTS = frozenset({"defined", "undefined"})

_TEXT_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
# HTML bodies escape every substituted value: a first name must never inject markup.
_HTML_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


@dataclass(frozen=True)
class TemplateInfo:
    """What a template reads: for load-time checks and for `required_keep()`."""

    contact_fields: frozenset[str]  # every contact field read, guarded or not
    unguarded: frozenset[str]  # fields read without `| default(...)` or an `is defined` guard
    uses_products: bool
    #: What a rendering depends on beyond the variant and the segment id, for caching:
    #: the contact fields it reads (None: the whole contact, or something too wide to key on).
    key_fields: tuple[str, ...] | None = None
    reads_change: bool = True


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    template: Any  # jinja2.Template
    info: TemplateInfo
    globals: dict  # the environment's globals (range, dict, ...), merged once rather than per render


def _const_str(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _field_of(node: nodes.Node, name: str) -> tuple[bool, str | None]:
    """(True, field) when `node` is `name.field` or `name["field"]`; (True, None) if dynamic."""
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == name:
        return True, node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name == name:
        return True, _const_str(node.arg)
    return False, None


def _defined_fields(test: nodes.Node) -> set[str]:
    """Contact fields a condition proves present (`contact.x is defined`, joined by `and`)."""
    if isinstance(test, nodes.And):
        return _defined_fields(test.left) | _defined_fields(test.right)
    if isinstance(test, nodes.Test) and test.name == "defined":
        hit, field = _field_of(test.node, "contact")
        if hit and field:
            return {field}
    return set()


class _Walker:
    def __init__(self, problems: list[str]) -> None:
        self.fields: set[str] = set()
        self.unguarded: set[str] = set()
        self.problems = problems
        self.wide = False  # reads the whole contact, or the segment's name
        self.reads_change = False

    def visit(self, node: nodes.Node, guarded: frozenset[str], direct_guard: bool = False) -> None:
        if isinstance(node, nodes.Name):  # an object used whole, not one of its fields
            if node.name in ("contact", "segment"):
                self.wide = True
            elif node.name == "change":
                self.reads_change = True
            return
        for name in ("contact", "segment", "change"):
            hit, field = _field_of(node, name)
            if not hit:
                continue
            if name == "change":
                self.reads_change = True
            elif name == "segment" and field != "id":
                self.wide = True
            elif name == "contact" and field in _DICT_METHODS:
                self.wide = True
            if field is None:
                self.problems.append(f"{name}[...] with a computed key: write {name}.FIELD so the field is known at load time")
            elif name == "contact":
                self.fields.add(field)
                if not direct_guard and field not in guarded:
                    self.unguarded.add(field)
            elif name == "segment" and field not in SEGMENT_FIELDS:
                self.problems.append(f"segment.{field} does not exist (segment has {', '.join(sorted(SEGMENT_FIELDS))})")
            elif name == "change" and field not in CHANGE_FIELDS:
                self.problems.append(f"change.{field} does not exist (change has {', '.join(sorted(CHANGE_FIELDS))})")
            # the object itself (`Name`) needs no visit; an index expression might
            if isinstance(node, nodes.Getitem):
                self.visit(node.arg, guarded)
            return
        if isinstance(node, nodes.Filter) and node.name in _GUARD_FILTERS and node.node is not None:
            self.visit(node.node, guarded, direct_guard=True)
            for child in (*node.args, *node.kwargs):
                self.visit(child, guarded)
            return
        if isinstance(node, nodes.Test) and node.name in _GUARD_TESTS:
            self.visit(node.node, guarded, direct_guard=True)
            return
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) \
                and isinstance(node.node.node, nodes.Name) and node.node.node.name == "contact" \
                and node.node.attr == "get" and node.args and _const_str(node.args[0]):
            self.fields.add(_const_str(node.args[0]))  # contact.get("x") is None when missing
            for child in node.args[1:]:
                self.visit(child, guarded)
            return
        if isinstance(node, nodes.If):
            inner = guarded | _defined_fields(node.test)
            self.visit(node.test, guarded)
            for child in node.body:
                self.visit(child, inner)
            for child in (*node.elif_, *node.else_):
                self.visit(child, guarded)
            return
        if isinstance(node, nodes.CondExpr):
            self.visit(node.test, guarded)
            self.visit(node.expr1, guarded | _defined_fields(node.test))
            if node.expr2 is not None:
                self.visit(node.expr2, guarded)
            return
        for child in node.iter_child_nodes():
            self.visit(child, guarded)


def compile_template(source: Any, *, html: bool, fallbacks: dict[str, Any], always: frozenset[str],
                     file: str, path: str) -> CompiledTemplate:
    """Compile and check one template; `always` are contact fields present whenever it renders."""
    if not isinstance(source, str):
        raise DefinitionError(file, path, f"a template must be a string, got {type(source).__name__}",
                              "quote the text, e.g. body: \"Hi {{ contact.first_name }}\"")
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        raise DefinitionError(file, path, f"template syntax error at line {exc.lineno}: {exc.message}",
                              "fix the Jinja2 syntax ({{ value }}, {% if %}...{% endif %})") from None
    unknown = sorted(meta.find_undeclared_variables(ast) - CONTEXT_NAMES - set(env.globals))
    if unknown:
        raise DefinitionError(
            file, path, f"unknown template variable {unknown[0]!r}",
            f"templates can use {', '.join(sorted(CONTEXT_NAMES))}; a profile field is contact.{unknown[0]}")
    problems: list[str] = []
    walker = _Walker(problems)
    walker.visit(ast, frozenset())
    if problems:
        raise DefinitionError(file, path, problems[0], "see the template context in docs/campaigns.md")
    missing = sorted(walker.unguarded - set(fallbacks) - always)
    if missing:
        f = missing[0]
        raise DefinitionError(
            file, path, f"contact.{f} has no fallback: a contact without {f} could not be rendered",
            f"add '{f}: ...' under fallbacks, or write {{{{ contact.{f} | default('...') }}}}")
    template = env.from_string(source)
    uses_products = "products" in meta.find_undeclared_variables(ast)
    wide = walker.wide
    info = TemplateInfo(frozenset(walker.fields), frozenset(walker.unguarded), uses_products,
                        None if wide else tuple(sorted(walker.fields)), walker.reads_change)
    return CompiledTemplate(source, template, info, dict(template.globals))


def render(t: CompiledTemplate, ctx: dict) -> str:
    """`Template.render` without re-merging the globals' ChainMap each time (half the cost)."""
    tmpl = t.template
    context = tmpl.new_context({**t.globals, **ctx}, shared=True)
    try:
        return tmpl.environment.concat(tmpl.root_render_func(context))
    except Exception:
        return tmpl.environment.handle_exception()  # re-raises with the template's traceback
