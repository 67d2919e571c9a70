"""Shorter derivative formulas: the derivative graph rewritten to a normal form
before it is printed (`--symbolic`).

The normal form is SymPy's for sums and products (Add and Mul with numeric
coefficients and powers): each node's value is a sum of terms, each term a
number times a product of atoms raised to numeric powers. Building it collects
constants through products and quotients (a/(2b)*2 -> a/b), combines like
terms (2x + 3x -> 5x) and like factors (x*x -> x^2, sqrt(t)/t -> 1/sqrt(t)),
reads uniform constants as numbers ([2]*x -> 2*x) and keeps one sign per term.
An atom is anything else (a variable, sin(...), indexing, @, ...), built from
its simplified operands; a sum that meets a product or a power becomes an atom
too (sums are not multiplied out, which could grow without bound), but it keeps
its terms so that a common denominator can expand it back when that is
shorter: what SymPy's together/cancel reach, chosen by size as an e-graph
extraction would (egg's cost function: the operation count).

Every rewrite is an identity on the reals wherever both sides are defined:
powers are split over products, and (a^k)^p merged, only for integer p or
where the base cannot be negative, so sqrt(x^2) stays |x|'s formula and is not
x. The numbers are those of `grad` up to rounding (tests/test_simplify.py
compares them at random points), not bit for bit: the graph printed without
this step is (Function.formulas(simplify=False)).

Nodes are visited in topological order and each one's form is built from its
operands' forms, so nothing recurses on the depth of an expression; a form is
kept to MAX_TERMS terms and MAX_FACTORS factors (beyond, it becomes an atom),
so the work stays linear in the size of the graph.
"""

from __future__ import annotations

import math

import numpy as np

from .nodes import Graph, Node, topological_order
from .ops import OPS

MAX_TERMS = 24  # terms of one sum before it is kept as an atom
MAX_FACTORS = 24  # factors of one product likewise
MAX_EXPANDED = 48  # terms a common numerator may be multiplied out into
_INNER = -1  # stands for the sum left after a common factor is taken out (costing only)

# Linear operations of one operand: a number in front of the operand comes out
# in front of the result (sum(2 * x) -> 2 * sum(x)). Operations that only move
# entries (their record's pattern "moves") are linear too.
_LINEAR = frozenset({"sum", "sum_to", "cumsum", "trace"})
_PRODUCTS = frozenset({"mul", "cmul"})
# cos^2 with sin^2, cosh^2 with sinh^2: the partner, and whether opposite signs
# (rather than equal ones) make the double angle.
_SQUARE_PARTNERS = {"cos": ("sin", True), "cosh": ("sinh", False)}
# sin(a) cos(a) = sin(2a) / 2, sinh(a) cosh(a) = sinh(2a) / 2: partner, doubled function
_PRODUCT_PARTNERS = {"sin": ("cos", "sin"), "sinh": ("cosh", "sinh")}  # cmul/cdiv are printed as * and / anyway
_QUOTIENTS = frozenset({"div", "cdiv"})


class Form:
    """terms: {monomial: coefficient}; a monomial is a sorted tuple of (atom id,
    exponent); () is the constant term. shape: the value's shape (terms that
    cancel must not take their broadcasting with them)."""

    __slots__ = ("terms", "shape")

    def __init__(self, terms: dict, shape: tuple):
        self.terms = terms
        self.shape = shape

    def single(self):
        """(coefficient, monomial) of a form of one term, else None."""
        if len(self.terms) != 1:
            return None
        ((monomial, coefficient),) = self.terms.items()
        return coefficient, monomial

    def constant(self) -> float | None:
        if not self.terms:
            return 0.0
        single = self.single()
        return single[0] if single is not None and not single[1] else None


def simplified(nodes):
    """The same structure (a node, or dicts of nodes, as Function.formulas has
    them) with each derivative node replaced by its simplified equivalent, all
    in one new graph (so what they share is built, and named, once)."""
    roots: list[Node] = []
    _collect(nodes, roots)
    simplifier = Simplifier()
    simplifier.run(roots)
    return _replace(nodes, simplifier.node_of)


def _collect(tree, out):
    if isinstance(tree, dict):
        for value in tree.values():
            _collect(value, out)
    else:
        out.append(tree)


def _replace(tree, node_of):
    if isinstance(tree, dict):
        return {k: _replace(v, node_of) for k, v in tree.items()}
    return node_of(tree)


class Simplifier:
    def __init__(self):
        self.graph = Graph()
        self.forms: dict[int, Form] = {}  # by the original node's id
        self.built: dict[int, Node] = {}  # likewise: the simplified node
        self.atoms: dict[int, Node] = {}  # by the new node's id
        self.expansions: dict[int, Form] = {}  # a sum kept as an atom: its terms
        self.guards: dict[int, Form] = {}  # where(z == 0, 1, z) atoms: z's form
        self.zero_guards: dict[int, list] = {}  # where(z == 0, 0, 1) atoms: the z nodes
        self.inside: dict[int, int] = {}  # a sum kept as an atom: its own operation count
        self.powers: dict[int, tuple] = {}  # a^b atoms with b not a number: (a's node, b's form)

    def run(self, roots) -> None:
        order = topological_order(roots)
        # Variables first, by name: products list their factors in atom order (x * y).
        for node in sorted((n for n in order if n.op == "var"), key=lambda n: n.attr):
            self.graph.var(node.attr, node.shape)
        for node in order:
            self.forms[node.id] = self.form_of(node)

    def node_of(self, original: Node) -> Node:
        node = self.built.get(original.id)
        if node is None:
            node = self.built[original.id] = self.build(self.forms[original.id])
        return node

    # ------------------------------------------------------------ graph -> forms

    def form_of(self, node: Node) -> Form:
        op, args = node.op, node.args
        if op == "var":
            return self.atom(self.graph.var(node.attr, node.shape))
        if op == "const":
            return self.constant_form(node)
        forms = [self.forms[a.id] for a in args]
        if op == "add":
            return self.add(forms[0], forms[1])
        if op == "sub":
            return self.add(forms[0], self.scale(forms[1], -1.0))
        if op == "neg":
            return self.scale(forms[0], -1.0)
        if op in _PRODUCTS:
            return self.multiply(forms[0], forms[1])
        if op in _QUOTIENTS:
            return self.multiply(forms[0], self.power(self.unguarded(forms[1]), -1.0))
        if op == "pow" and forms[1].constant() is not None and node.shape == args[0].shape:
            p = forms[1].constant()
            return self.power(self.unguarded(forms[0]) if p < 0 else forms[0], p)
        if op == "sqrt":
            return self.power(forms[0], 0.5)
        if op == "hypot":  # sqrt(a^2 + b^2) on the reals: meets the same sum elsewhere
            return self.power(self.add(self.power(forms[0], 2.0), self.power(forms[1], 2.0)), 0.5)
        if op in ("reshape", "broadcast_to") and _lifts_or_broadcasts(args[0].shape, node.shape):
            # the same numbers wherever an elementwise operation broadcasts them
            return Form(forms[0].terms, node.shape)
        if op == "pow":  # a non-constant exponent: an atom that remembers base and exponent
            form = self.operation(node, forms)
            single = form.single()
            if single is not None and single[0] == 1.0 and len(single[1]) == 1:
                self.powers[single[1][0][0]] = (self.build(forms[0]), forms[1])
            return form
        if op == "where":
            return self.where(node, forms)
        if op == "log":
            forms = [self.unguarded(forms[0])]
        return self.operation(node, forms)

    # ------------------------------------------------------------ where, as derivative rules use it
    #
    # Rules guard a quotient or a logarithm against a zero: where(z == 0, 1, z) as a
    # denominator (norm), log(where(z == 0, 1, z)) (pow's exponent), and put 0 where
    # a product with z in it is 0 or undefined: where(z == 0, 0, e). Without the guard
    # each is an identity wherever both sides are defined (at z = 0 the unguarded side
    # is 0/0 or log(0)); grad keeps its chosen value there, the formula does not.

    def where(self, node: Node, forms: list[Form]) -> Form:
        condition, a, b = node.args
        zeros = [self.node_of(z) for z in _zero_when(condition)]
        if zeros and a.op == "const" and a.uniform == 1.0 and any(z is self.node_of(b) for z in zeros):
            form = self.operation(node, forms)
            atom = _single_atom(form)
            if atom is not None:
                self.guards[atom] = forms[2]
            return form
        if zeros and a.op == "const" and a.uniform == 0.0 and forms[2].terms and \
                all(self.vanishes(m, zeros) for m in forms[2].terms):
            return Form(forms[2].terms, node.shape)
        if zeros and a.op == "const" and a.uniform == 0.0 and forms[2].constant() == 1.0:
            # where(z == 0, 0, 1): a factor that a product with z in it does not need
            form = self.operation(node, forms)
            atom = _single_atom(form)
            if atom is not None:
                self.zero_guards[atom] = zeros
            return form
        return self.operation(node, forms)

    def with_merged_powers(self, terms: dict) -> dict:
        out: dict = {}
        for m, c in terms.items():
            for _ in range(len(m)):
                merged = self.merged_powers(m)
                if merged == m:
                    break
                m = merged
            out[m] = out.get(m, 0.0) + c
        return {m: c for m, c in out.items() if c != 0.0}

    def merged_powers(self, monomial: tuple) -> tuple:
        """a^b * a^k = a^(b + k) and a^b * a^c = a^(b + c) for exponents that are not
        numbers (x * x^(x - 1) is x^x), wherever both sides are defined."""
        for i, k in monomial:
            if k != 1.0 or i not in self.powers:
                continue
            base, exponent = self.powers[i]
            powers = dict(monomial)
            partner = None
            if base.id in powers and powers[base.id].is_integer():
                partner = base.id
                exponent = self.add(exponent, Form({(): powers[base.id]}, ()))
            else:
                for j, kj in monomial:
                    if j != i and kj == 1.0 and j in self.powers and self.powers[j][0] is base:
                        partner = j
                        exponent = self.add(exponent, self.powers[j][1])
                        break
            if partner is None:
                continue
            del powers[i], powers[partner]
            node = self.graph.apply("pow", (base, self.build(exponent)))
            merged = self.atom(node)
            single = merged.single()
            if single is None or single[0] != 1.0 or len(single[1]) != 1:
                continue  # folded to a number: left as it was
            n = single[1][0][0]
            self.powers[n] = (base, exponent)
            powers[n] = powers.get(n, 0.0) + 1.0
            return tuple(sorted(powers.items()))
        return monomial

    def unneeded_guards(self, monomial: tuple) -> tuple:
        """monomial without its where(z == 0, 0, 1) factors whose other factors are 0
        or undefined at z = 0 anyway."""
        for i, k in monomial:
            zeros = self.zero_guards.get(i)
            if zeros is not None and k > 0:
                rest = tuple(f for f in monomial if f[0] != i)
                if self.vanishes(rest, zeros):
                    monomial = rest
        return monomial

    def vanishes(self, monomial, zeros) -> bool:
        """The term is 0 or undefined wherever one of zeros is 0: it has one of them,
        or their log or sign, as a factor."""
        ids = {z.id for z in zeros}
        for i, k in monomial:
            atom = self.atoms[i]
            if i in ids or (atom.op in ("log", "sign") and atom.args[0].id in ids):
                return True
        return False

    def unguarded(self, form: Form) -> Form:
        """A guarded operand (where(z == 0, 1, z)) as z, where a zero makes the whole
        term undefined anyway (a denominator, a logarithm)."""
        single = form.single()
        if single is not None and single[0] == 1.0 and len(single[1]) == 1 and single[1][0][1] == 1.0:
            return self.guards.get(single[1][0][0], form)
        return form

    def constant_form(self, node: Node) -> Form:
        number = node.uniform
        if number is None or not math.isfinite(number):
            return self.atom(self.graph.const(node.value))
        return Form({(): number} if number != 0.0 else {}, node.shape)

    def operation(self, node: Node, forms: list[Form]) -> Form:
        """An atom: the operation applied to its simplified operands, with a number
        in front of the operand of a linear operation taken out in front."""
        factor = 1.0
        linear = node.op in _LINEAR or (OPS[node.op].pattern == "moves" and len(forms) == 1)
        if linear or node.op == "matmul":
            pulled = []
            for form in forms:
                single = form.single()
                if single is not None and single[0] != 1.0 and single[1]:
                    factor *= single[0]
                    form = Form({single[1]: 1.0}, form.shape)
                pulled.append(form)
            forms = pulled
        operands = [self.build(f) for f in forms]
        atom = self.atom(self.graph.apply(node.op, operands, node.attr))
        return self.scale(atom, factor) if factor != 1.0 else atom

    def atom(self, node: Node) -> Form:
        if node.op == "const":
            if node.uniform is not None and math.isfinite(node.uniform):
                return Form({(): node.uniform} if node.uniform != 0.0 else {}, node.shape)
        self.atoms[node.id] = node
        return Form({((node.id, 1.0),): 1.0}, node.shape)

    def frozen(self, form: Form) -> Form:
        """form as one term: a sum becomes an atom (its terms remembered for a common
        numerator), with the factor its terms have in common kept outside it, so
        that x * ((a + b) / x) is still a + b."""
        if len(form.terms) > 1:
            coefficient, common = _common_factor(form.terms)
            if common or coefficient != 1.0:
                inner = Form({_divided(m, common): c / coefficient for m, c in form.terms.items()}, form.shape)
                atom = self.frozen(inner)
                if not atom.terms:
                    return Form({}, form.shape)
                ((monomial, inner_coefficient),) = atom.terms.items()
                return Form({_times(common, monomial): coefficient * inner_coefficient}, form.shape)
        node = self.build(form)
        atom = self.atom(node)
        if len(form.terms) > 1 and atom.single() is not None and atom.single()[1]:
            self.remember_sum(node, form)
        return atom

    # ------------------------------------------------------------ arithmetic on forms

    def add(self, a: Form, b: Form) -> Form:
        terms = dict(a.terms)
        for monomial, c in b.terms.items():
            total = terms.get(monomial, 0.0) + c
            if total == 0.0:
                terms.pop(monomial, None)
            else:
                terms[monomial] = total
        form = Form(terms, _broadcast(a.shape, b.shape))
        return self.frozen(form) if len(terms) > MAX_TERMS else form

    def scale(self, a: Form, c: float) -> Form:
        if c == 0.0:
            return Form({}, a.shape)
        return Form({m: k * c for m, k in a.terms.items()}, a.shape)

    def multiply(self, a: Form, b: Form) -> Form:
        shape = _broadcast(a.shape, b.shape)
        for attempt in range(2):  # again after freezing: a sum may cancel to a number
            for one, other in ((a, b), (b, a)):
                c = one.constant()
                if c is not None:
                    scaled = self.scale(other, c)
                    return Form(scaled.terms, shape)
            if a.single() is None:
                a = self.frozen(a)
            if b.single() is None:
                b = self.frozen(b)
        (ca, ma), (cb, mb) = a.single(), b.single()
        monomial = _times(ma, mb)
        if self.zero_guards:
            monomial = self.unneeded_guards(monomial)
        form = Form({monomial: ca * cb}, shape)
        return self.frozen(form) if len(monomial) > MAX_FACTORS else form

    def power(self, a: Form, p: float) -> Form:
        if p == 1.0:
            return a
        if p == 0.0:  # x^0 is 1 for every x (NumPy's pow, nan and inf included)
            return Form({(): 1.0}, a.shape)
        c = a.constant()
        if c is not None:  # NumPy's power of the number: a number, or an atom for inf and nan
            with np.errstate(all="ignore"):
                value = float(np.power(c, p))
            if math.isfinite(value):
                return Form({(): value} if value != 0.0 else {}, a.shape)
            return self.atom(self.graph.apply("pow", (self.build(a), p)))
        if a.single() is None:
            a = self.frozen(a)
            if a.constant() is not None:  # the sum cancelled to a number
                return self.power(a, p)
        single = a.single()
        if _splits(single, p):
            coefficient, monomial = single
            return Form({tuple((i, k * p) for i, k in monomial): coefficient ** p}, a.shape)
        if len(single[1]) != 1 or single[0] != 1.0 or single[1][0][1] != 1.0:
            a = self.atom(self.build(a))  # one atom to the power 1
        ((i, k),) = next(iter(a.terms))
        return Form({((i, k * p),): 1.0}, a.shape)

    # ------------------------------------------------------------ forms -> graph

    def build(self, form: Form) -> Node:
        """The shortest of: the form as it is, or with its sums multiplied out (like
        terms combined), each written plainly or with the factor (or denominator)
        its terms have in common taken out, that factor's cofactor multiplied out
        where shorter. SymPy's together/cancel, chosen by operation count."""
        candidates = []
        if self.powers:  # only when written: a^b * a is a^(b+1) but has a larger domain
            form = Form(self.with_merged_powers(form.terms), form.shape)
        expanded = self.expanded_fully(form.terms)
        for terms in (form.terms, expanded, self.trigonometric(form.terms),
                      None if expanded is None else self.trigonometric(expanded)):
            if terms is None:
                continue
            if len(terms) <= 1:
                candidates.append((self.cost(terms), 0, terms, None))
                continue
            candidates.append((self.cost(terms), 1, terms, None))
            factored = self.factored(terms)
            if factored is not None:  # on a tie, each atom written fewer times
                candidates.append((factored[0], 0, terms, factored[1]))
        _, _, terms, factored = min(candidates, key=lambda c: c[:2])
        if factored is None:
            if not terms:
                node = self.graph.const(0.0)
            elif len(terms) == 1:
                node = self.term_node(*next(iter(terms.items()))[::-1])
            else:
                node = self.sum_node(terms)
        else:
            coefficient, common, inner = factored
            if not inner:  # everything cancelled
                node = self.graph.const(0.0)
            elif len(inner) == 1:  # everything cancelled down to one term
                ((m, c),) = inner.items()
                node = self.term_node(c * coefficient, _times(common, m))
            else:
                inner_node = self.sum_node(inner)
                self.remember_sum(inner_node, Form(inner, form.shape))
                node = self.term_node(coefficient, _times(common, ((inner_node.id, 1.0),)))
        return self.fitted(node, form.shape)

    # ------------------------------------------------------------ identities of sin, cos, sinh, cosh

    def trigonometric(self, terms: dict) -> dict | None:
        """terms with the double-angle and Pythagorean identities applied once where
        they meet: c cos(a)^2 - c sin(a)^2 -> c cos(2a), c (sin(a)^2 + cos(a)^2) -> c,
        c (cosh(a)^2 + sinh(a)^2) -> c cosh(2a), c (cosh(a)^2 - sinh(a)^2) -> c;
        sin(a) cos(a) -> sin(2a) / 2, sinh(a) cosh(a) -> sinh(2a) / 2,
        sin(a)^k / cos(a)^k -> tan(a)^k. None if none applies."""
        out = dict(terms)
        changed = False
        for m in terms:
            if m not in out:
                continue
            for i, k in m:
                found = self.squares(out, m, out[m], i, k)
                if found is not None:
                    out, changed = found, True
                    break
        products = {}
        for m, c in out.items():
            new_m, factor = self.products(m)
            changed = changed or new_m != m
            products[new_m] = products.get(new_m, 0.0) + c * factor
        return {m: c for m, c in products.items() if c != 0.0} if changed else None

    def squares(self, out: dict, m: tuple, c: float, i: int, k: float) -> dict | None:
        atom = self.atoms[i]
        if k != 2.0 or atom.op not in _SQUARE_PARTNERS:
            return None
        partner_op, double_when_opposite = _SQUARE_PARTNERS[atom.op]
        partner = self.graph.apply(partner_op, atom.args)
        rest = tuple(f for f in m if f[0] != i)
        other = _times(rest, ((partner.id, 2.0),))
        d = out.get(other)
        if partner.id not in self.atoms or d is None or abs(d) != abs(c):
            return None
        out = dict(out)
        del out[m], out[other]
        if (d == -c) == double_when_opposite:
            doubled = self.atom(self.graph.apply(atom.op, (self.graph.apply("mul", (2.0, atom.args[0])),)))
            rest = _times(rest, next(iter(doubled.terms)))
        out[rest] = out.get(rest, 0.0) + c
        if out[rest] == 0.0:
            del out[rest]
        return out

    def products(self, m: tuple) -> tuple[tuple, float]:
        """(monomial, number) with sin(a) cos(a) (and its hyperbolic twin) as one
        doubled sine, and sin(a)^k / cos(a)^k as tan(a)^k."""
        powers = dict(m)
        factor = 1.0
        for i, k in m:
            atom = self.atoms[i]
            if i not in powers or atom.op not in _PRODUCT_PARTNERS:
                continue
            partner_op, doubled_op = _PRODUCT_PARTNERS[atom.op]
            j = self.graph.apply(partner_op, atom.args).id
            if k == 1.0 and powers.get(j) == 1.0:
                doubled = self.graph.apply("mul", (2.0, atom.args[0]))
                new, exponent = self.atom(self.graph.apply(doubled_op, (doubled,))), 1.0
                factor *= 0.5
            elif atom.op == "sin" and k.is_integer() and powers.get(j) == -k:
                new, exponent = self.atom(self.graph.apply("tan", atom.args)), k
            else:
                continue
            del powers[i], powers[j]
            ((n, _),) = next(iter(new.terms))
            total = powers.get(n, 0.0) + exponent
            if total == 0.0:
                powers.pop(n, None)
            else:
                powers[n] = total
        return tuple(sorted(powers.items())), factor

    def remember_sum(self, node: Node, form: Form) -> None:
        self.atoms[node.id] = node
        if node.id not in self.expansions:
            self.expansions[node.id] = form
            self.inside[node.id] = self.cost(form.terms)

    def cost(self, terms: dict) -> int:
        return sum_cost(terms, self.inside)

    def factored(self, terms: dict):
        """(cost, (coefficient, common monomial, inner terms)) with the common factor of
        every term taken out (negative powers: a common denominator), or None."""
        coefficient, common = _common_factor(terms)
        if not common and coefficient == 1.0:
            return None
        inner = {_divided(m, common): c / coefficient for m, c in terms.items()}
        expanded = self.expanded_fully(inner)
        if expanded is not None and self.cost(expanded) < self.cost(inner):
            inner = expanded
        if len(inner) <= 1:
            ((m, c),) = inner.items() if inner else (((), 0.0),)
            return term_cost(c * coefficient, _times(common, m), self.inside), (coefficient, common, inner)
        cost = self.cost(inner) + term_cost(coefficient, _times(common, ((_INNER, 1.0),)), self.inside)
        return cost, (coefficient, common, inner)

    def expanded_fully(self, terms: dict) -> dict | None:
        """expanded, again while it finds sums to multiply out (a few levels)."""
        result = None
        for _ in range(4):
            more = self.expanded(terms if result is None else result)
            if more is None:
                break
            result = more
        return result

    def expanded(self, terms: dict) -> dict | None:
        """terms with the sums kept as atoms (to a positive integer power) multiplied
        out and like terms combined; None if there is none or it grows too large."""
        total: dict = {}
        grew = False
        for monomial, c in terms.items():
            product = {(): c}
            for i, k in monomial:
                expansion = self.expansions.get(i)
                if expansion is not None and k.is_integer() and 0 < k <= 2:
                    for _ in range(int(k)):
                        product = _poly_times(product, expansion.terms)
                    grew = True
                else:
                    product = _poly_times(product, {((i, k),): 1.0})
                if len(product) > MAX_EXPANDED:
                    return None
            for m, value in product.items():
                total[m] = total.get(m, 0.0) + value
                if total[m] == 0.0:
                    del total[m]
            if len(total) > MAX_EXPANDED:
                return None
        return total if grew else None

    def sum_node(self, terms: dict) -> Node:
        """Terms added in a fixed order (so equal sums are one node), a positive
        term first; when every term is negative, one minus in front of them all."""
        ordered = sorted(terms.items(), key=lambda item: (item[1] < 0, item[0]))
        negate = ordered[0][1] < 0
        node = None
        for monomial, c in ordered:
            if negate:
                c = -c
            part = self.term_node(abs(c), monomial)
            if node is None:
                node = part if c > 0 else self.graph.apply("neg", (part,))
            else:
                node = self.graph.apply("add" if c > 0 else "sub", (node, part))
        return self.graph.apply("neg", (node,)) if negate else node

    def term_node(self, c: float, monomial) -> Node:
        """c * (numerator factors) / (denominator factors), the sign in front."""
        if self.powers:
            ((monomial, c),) = self.with_merged_powers({monomial: c}).items() or (((), 0.0),)
        numerator = [self.factor(i, k) for i, k in monomial if k > 0]
        denominator = [self.factor(i, -k) for i, k in monomial if k < 0]
        # The sign goes on the number in front, or on the first factor: -2 * x / y,
        # -x / y ((-x) / y is -(x / y) exactly: negation only flips the sign bit).
        if c == 1.0 and numerator:
            node = None
        elif c == -1.0 and numerator:
            node, numerator[0] = None, self.graph.apply("neg", (numerator[0],))
        else:
            node = self.graph.const(c)
        for factor in numerator:
            node = factor if node is None else self.graph.apply("mul", (node, factor))
        if denominator:
            below = denominator[0]
            for factor in denominator[1:]:
                below = self.graph.apply("mul", (below, factor))
            node = self.graph.apply("div", (node, below))
        return node

    def factor(self, i: int, k: float) -> Node:
        atom = self.atoms[i]
        if k == 1.0:
            return atom
        if k == 0.5:
            return self.graph.apply("sqrt", (atom,))
        return self.graph.apply("pow", (atom, k))

    def fitted(self, node: Node, shape: tuple) -> Node:
        """node broadcast to the form's shape, where terms that cancelled took the
        broadcasting with them."""
        if node.shape == shape:
            return node
        if len(node.shape) < len(shape):
            node = self.graph.reshape(node, (1,) * (len(shape) - len(node.shape)) + node.shape)
        return self.graph.apply("broadcast_to", (node,), shape)


# ---------------------------------------------------------------- monomials and their cost

def _single_atom(form: Form) -> int | None:
    """The atom's id, for a form that is one atom (not folded to a number)."""
    single = form.single()
    if single is None or single[0] != 1.0 or len(single[1]) != 1 or single[1][0][1] != 1.0:
        return None
    return single[1][0][0]


def _lifts_or_broadcasts(source: tuple, target: tuple) -> bool:
    """target is source broadcast (leading axes of size 1 added, axes of size 1 grown)."""
    lifted = (1,) * (len(target) - len(source)) + source
    return len(target) >= len(source) and all(s in (1, t) for s, t in zip(lifted, target))


def _zero_when(condition: Node) -> list[Node]:
    """Nodes z with condition = 1 only where z = 0: z == 0, or a product of
    0/1 conditions with such a factor (pow's rule multiplies two: (b == 0) * (a == 0),
    which is (x == 0)^2 for x^x)."""
    found, stack = [], [condition]
    while stack:
        c = stack.pop()
        if c.op == "eq":
            for z, other in (c.args, c.args[::-1]):
                if other.op == "const" and other.uniform == 0.0 and z.shape == c.shape:
                    found.append(z)
        elif c.op == "mul" and all(a.op in ("eq", "ge", "gt", "le", "lt", "ne", "mul", "pow") for a in c.args):
            stack.extend(c.args)
        elif c.op == "pow" and c.args[1].op == "const" and c.args[1].uniform is not None and \
                c.args[1].uniform > 0 and c.args[0].op in ("eq", "mul"):
            stack.append(c.args[0])  # (z == 0)^2: a 0/1 condition times itself, as interning writes it
    return found


def _broadcast(a: tuple, b: tuple) -> tuple:
    if a == b:
        return a
    rank = max(len(a), len(b))
    a, b = (1,) * (rank - len(a)) + a, (1,) * (rank - len(b)) + b
    return tuple(max(x, y) if 1 in (x, y) else x for x, y in zip(a, b))


def _times(a: tuple, b: tuple) -> tuple:
    if not a:
        return b
    if not b:
        return a
    powers = dict(a)
    for i, k in b:
        total = powers.get(i, 0.0) + k
        if total == 0.0:  # x / x is 1 wherever both sides are defined
            powers.pop(i, None)
        else:
            powers[i] = total
    return tuple(sorted(powers.items()))


def _divided(a: tuple, b: tuple) -> tuple:
    return _times(a, tuple((i, -k) for i, k in b))


def _common_factor(terms: dict) -> tuple[float, tuple]:
    """The number (the terms' one magnitude, negative if every term is) and the
    monomial every term has in common."""
    coefficients = list(terms.values())
    coefficient = abs(coefficients[0]) if all(abs(c) == abs(coefficients[0]) for c in coefficients) else 1.0
    if all(c < 0 for c in coefficients):
        coefficient = -coefficient
    return coefficient, _common_monomial(list(terms))


def _common_monomial(monomials: list) -> tuple:
    """Each atom to the least power it has in every term (absent: power 0), where
    that is not 0: a common factor if positive, a common denominator if negative."""
    atoms = {i for m in monomials for i, _ in m}
    common = []
    for i in sorted(atoms):
        powers = [dict(m).get(i, 0.0) for m in monomials]
        low = min(powers)
        if low != 0.0:
            common.append((i, low))
    return tuple(common)


def _poly_times(a: dict, b: dict) -> dict:
    out: dict = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = _times(ma, mb)
            out[m] = out.get(m, 0.0) + ca * cb
            if out[m] == 0.0:
                del out[m]
    return out


def _splits(single, p: float) -> bool:
    """(c * a^k * b^l ...)^p may be written c^p a^(kp) b^(lp): for an integer p
    always (where both sides are defined); otherwise only where no base can be
    negative while the left side is defined: c > 0, and every factor either one
    base to the power 1 or already a power that needs a base >= 0."""
    c, monomial = single
    if p.is_integer():
        return c != 0.0 or p > 0
    if c <= 0.0:
        return False
    if len(monomial) == 1 and monomial[0][1] == 1.0:
        return True
    return all(not float(k).is_integer() for _, k in monomial)


def term_cost(c: float, monomial, inside: dict) -> int:
    """Operations in c * a^k * ... / (b^l * ...) as term_node writes it (a power
    of 1/2 is one sqrt, any other power one ^), and those inside the sums among
    the factors (each time it is written: multiplying one out may remove it)."""
    numerator = [k for _, k in monomial if k > 0]
    denominator = [k for _, k in monomial if k < 0]
    cost = len(numerator) - 1 + (abs(c) != 1.0 and bool(numerator))
    cost = max(cost, 0) + (len(denominator) if denominator else 0)
    cost += sum(1 for k in numerator + denominator if abs(k) != 1.0)
    cost += sum(inside.get(i, 0) for i, _ in monomial)
    return cost + (c == -1.0 or (c < 0 and not numerator))


def sum_cost(terms: dict, inside: dict) -> int:
    """Each term's cost and one operation between terms; a term's minus sign is
    the subtraction itself (sum_node writes a - b), so it costs nothing more."""
    return sum(term_cost(abs(c), m, inside) for m, c in terms.items()) + len(terms) - 1 + \
        all(c < 0 for c in terms.values())
