"""What other tools call diffcli's functions: suggestions for a name diffcli
does not know, by meaning first, then by spelling.

The table is keyed by the other tools' names and lists diffcli's in order of
preference; a name is suggested only if diffcli's function table has it when
the suggestion is made, so aliases added to functions.py (ln, arcsin, ...) are
picked up without touching this file. Functions diffcli spells as a formula
(cot as 1/tan(x)) are offered as that formula, when its functions exist.
"""

from __future__ import annotations

import re

from .functions import CONSTANTS, FUNCTIONS

# other tools' name -> diffcli's names (the first that exists is suggested) or a formula in x
MEANINGS: dict[str, tuple[str, ...]] = {
    # logarithms and exponentials
    "loge": ("log",), "lg": ("log10",), "lb": ("log2",), "ld": ("log2",),
    "log_10": ("log10",), "log_2": ("log2",), "exp10": ("10^x",), "pow10": ("10^x",),
    "exponential": ("exp",), "float_power": ("pow",), "sqr": ("x^2",),
    "cube": ("x^3",), "cuberoot": ("cbrt",), "cube_root": ("cbrt",),
    "reduce_logsumexp": ("logsumexp",),
    # trigonometry, in English, Spanish, Italian, Portuguese, French and Russian/German spellings
    "sen": ("sin",), "sine": ("sin",), "cosine": ("cos",), "tg": ("tan",), "tang": ("tan",),
    "arcsin": ("arcsin", "asin"), "arcsen": ("arcsin", "asin"), "asen": ("arcsin", "asin"),
    "arcsine": ("arcsin", "asin"), "arccos": ("arccos", "acos"), "arccosine": ("arccos", "acos"),
    "arctan": ("arctan", "atan"), "arctg": ("arctan", "atan"), "atg": ("arctan", "atan"),
    "arctan2": ("arctan2", "atan2"), "atan2d": ("atan2",),
    "cot": ("cot", "1/tan(x)"), "cotan": ("cot", "1/tan(x)"), "ctg": ("cot", "1/tan(x)"),
    "cotg": ("cot", "1/tan(x)"), "sec": ("sec", "1/cos(x)"), "csc": ("csc", "1/sin(x)"),
    "cosec": ("csc", "1/sin(x)"), "acot": ("acot", "pi/2 - atan(x)"), "arccot": ("acot", "pi/2 - atan(x)"),
    "arcctg": ("acot", "pi/2 - atan(x)"), "asec": ("asec", "acos(1/x)"), "arcsec": ("asec", "acos(1/x)"),
    "acsc": ("acsc", "asin(1/x)"), "arccsc": ("acsc", "asin(1/x)"),
    # hyperbolic
    "sh": ("sinh",), "ch": ("cosh",), "th": ("tanh",), "senh": ("sinh",), "tgh": ("tanh",),
    "arcsinh": ("arcsinh", "asinh"), "arsinh": ("arcsinh", "asinh"), "argsh": ("arcsinh", "asinh"),
    "arccosh": ("arccosh", "acosh"), "arcosh": ("arccosh", "acosh"), "argch": ("arccosh", "acosh"),
    "arctanh": ("arctanh", "atanh"), "artanh": ("arctanh", "atanh"), "argth": ("arctanh", "atanh"),
    "coth": ("coth", "1/tanh(x)"), "sech": ("sech", "1/cosh(x)"), "csch": ("csch", "1/sinh(x)"),
    # elementwise
    "sgn": ("sign",), "signum": ("sign",), "ceiling": ("ceil",),
    "expit": ("sigmoid",),     "logit": ("log(x/(1-x))",), "root": ("sqrt",), "sqroot": ("sqrt",),
    # reductions and linear algebra
    "amax": ("max",), "amin": ("min",), "reduce_max": ("max",), "reduce_min": ("min",),
    "average": ("mean",), "avg": ("mean",), "reduce_mean": ("mean",), "total": ("sum",),
    "reduce_sum": ("sum",), "reduce_prod": ("prod",), "product": ("prod",), "cumulative_sum": ("cumsum",),
    "cumulative_prod": ("cumprod",), "vdot": ("dot",),     "mm": ("A @ B",), "mv": ("A @ B",), "tr": ("trace",),
    "magnitude": ("norm",), "length": ("norm",), "l2norm": ("norm",), "softargmax": ("softmax",),
}

# A suggested formula's function names, which must exist for it to be offered.
_CALLED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")


def _available(suggestion: str) -> bool:
    if suggestion in FUNCTIONS or suggestion in CONSTANTS:
        return True
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", suggestion):  # a formula
        return all(name in FUNCTIONS for name in _CALLED.findall(suggestion))
    return False


def by_meaning(name: str) -> list[str]:
    """diffcli's name (or formula) for what other tools call `name`: the first
    of the table's choices that exists now; none if the table does not know it."""
    for choice in MEANINGS.get(name, MEANINGS.get(name.lower(), ())):
        if _available(choice):
            return [choice]
    return []


def suggestions(name: str, limit: int = 3) -> list[str]:
    """Names (or formulas) to offer for an unknown function name: by meaning
    first, then the closest spellings among the functions that exist."""
    import difflib  # only an error needs it

    found = by_meaning(name)
    for close in difflib.get_close_matches(name, list(FUNCTIONS), n=limit):
        if close not in found:
            found.append(close)
    return found[:limit]


def hint(found: list[str]) -> str:
    """': did you mean 'log'?', ': did you mean 1/tan(x)? (or 'dot')', or ''."""
    if not found:
        return ""
    shown = [_quoted(s) for s in found]
    rest = f" (or {', '.join(shown[1:])})" if len(shown) > 1 else ""
    return f": did you mean {shown[0]}?{rest}"


def _quoted(suggestion: str) -> str:
    return f"'{suggestion}'" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", suggestion) else suggestion


# Module prefixes of other tools: np.sin, numpy.sin, math.exp, torch.exp, jnp.exp, tf.math.sin, F.relu
DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def for_dotted(dotted: str) -> list[str]:
    """What to write for a name with a module prefix: its last part, if diffcli
    knows it (as a function, a constant or another tool's name), else nothing."""
    last = dotted.rsplit(".", 1)[1]
    if last in FUNCTIONS or last in CONSTANTS:
        return [last]
    return by_meaning(last)
