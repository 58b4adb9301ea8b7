"""Two to four sentences that open the headline, generated from its numbers (never typed by hand).

Per dataset and model: who leads the leaderboard and what it costs in clean accuracy, whether the lead is
outside the noise or who gains more robustness at a significant clean cost, how many correctors improve
significantly, and the attack picture. Every number comes with its interval and (Holm-adjusted) test, as
in the tables.
"""

from __future__ import annotations

import math

from deeppatch.reporting.cells import Column, Table, format_bound, format_number
from deeppatch.reporting.inference import p_text
from deeppatch.reporting.leaderboard import CLEAN, DELTA_CLEAN, Ranking
from deeppatch.reporting.tables import attack_label

MAX_SENTENCES = 4


def takeaways(head: Table | None, found: list[Ranking], switched_attacks: bool = False) -> tuple[str, ...]:
    if head is None or not found:
        return ()
    per_block = [_block(head, r, prefix=len(found) > 1, switched_attacks=switched_attacks) for r in found]
    out: list[str] = []
    depth = max(len(b) for b in per_block)
    for i in range(depth):  # every block's first sentence before any block's second
        for sentences in per_block:
            if i < len(sentences) and len(out) < MAX_SENTENCES:
                out.append(sentences[i])
    return tuple(out)


def _col(head: Table, name: str) -> Column | None:
    return next((c for c in head.columns if c.name == name), None)


def _title(head: Table, name: str) -> str:
    column = _col(head, name)
    return (column.title or column.name) if column else name


def _value(head: Table, r: int, name: str) -> str:
    """'78.06 (95 % CI [77.2, 78.9])', or the value alone without an interval."""
    column = _col(head, name)
    mean = head.mean.loc[r, name]
    text = format_number(mean, column)
    low, high = head.low.loc[r, name], head.high.loc[r, name]
    if math.isfinite(low) and math.isfinite(high):
        text += f" (95 % CI [{format_bound(low, column)}, {format_bound(high, column)}])"
    return text


def _change(head: Table, r: int, name: str) -> tuple[float, str, str, bool | None]:
    """(Δ, its text '+23.01', '95 % CI [22.1, 23.9], p < 0.001' (or 'untested'), significant; None: untested)."""
    column = _col(head, name)
    delta = float(head.mean.loc[r, name])
    parts = []
    low, high = head.low.loc[r, name], head.high.loc[r, name]
    if math.isfinite(low) and math.isfinite(high):
        parts.append(f"95 % CI [{format_bound(low, column)}, {format_bound(high, column)}]")
    tested = bool(head.tested.loc[r, name])
    parts.append(p_text(float(head.p.loc[r, name]), True) if tested else "untested")
    return delta, format_number(delta, column), ", ".join(parts), (bool(head.significant.loc[r, name]) if tested
                                                                   else None)


def _clean_phrase(head: Table, r: int) -> str:
    """'keeps clean accuracy (-0.05, 95 % CI [-0.3, 0.2], n.s.)', 'loses 2.10 points of clean accuracy (...)'."""
    if DELTA_CLEAN not in head.mean or not math.isfinite(head.mean.loc[r, DELTA_CLEAN]):
        return f"has clean accuracy {_value(head, r, CLEAN)}" if CLEAN in head.mean else ""
    delta, value, text, sig = _change(head, r, DELTA_CLEAN)
    if sig is False or (sig is None and value.strip("+-0.") == ""):
        return f"keeps clean accuracy ({value}, {text})"
    return f"{'gains' if delta > 0 else 'loses'} {abs(delta):.2f} points of clean accuracy ({text})"


def _gain_phrase(head: Table, r: int, metric: str) -> str:
    """'gains 23.01 points of blur mean against none (95 % CI [...], p < 0.001)'."""
    name = f"Δ {metric}"
    title = _title(head, metric)
    if name not in head.mean or not math.isfinite(head.mean.loc[r, name]):
        return f"reaches {_value(head, r, metric)} {title}"
    delta, value, text, sig = _change(head, r, name)
    if sig is False:
        return f"does not change {title} significantly against none ({value}, {text})"
    return f"{'gains' if delta >= 0 else 'loses'} {abs(delta):.2f} points of {title} against none ({text})"


def _sentence(where: str, text: str, capitalize: bool = True) -> str:
    """`text` after the block's "On dataset / model, ", else as a sentence (a corrector's name keeps its case)."""
    if where:
        return where + text
    return text[:1].upper() + text[1:] if capitalize else text


def _block(head: Table, ranking: Ranking, prefix: bool, switched_attacks: bool) -> list[str]:
    where = f"On {ranking.dataset} / {ranking.model}, " if prefix else ""
    metric = ranking.metric
    title = _title(head, metric)
    label = head.labels["corrector"]
    ranked = [r for r in ranking.order if ranking.rank[r] not in ("–", "ref")]
    others = [r for r in ranking.order if ranking.rank[r] != "ref"]
    refs = [r for r in ranking.order if ranking.rank[r] == "ref"]
    points = f"{ranking.tolerance:g} point{'s' if ranking.tolerance != 1 else ''}"
    out: list[str] = []
    if not ranked:
        if others:
            out.append(_sentence(where, f"no corrector keeps its clean drop within {points} (not significantly "
                                        "beyond it)."))
        return out
    lead = ranked[0]
    clean = _clean_phrase(head, lead) if metric != CLEAN else ""
    gain = _gain_phrase(head, lead, metric)
    does = f"{clean} and {gain}" if clean else gain
    out.append(_sentence(where, f"{label[lead]} ranks first on {title} among the correctors whose clean drop is "
                                f"not significantly beyond {points}: it {does}.", False))

    top = max(others, key=lambda r: (head.mean.loc[r, metric], -r))
    if top != lead:  # a corrector with more robustness, left out for its clean drop
        out.append(_sentence(where, f"{label[top]} {_gain_phrase(head, top, metric)} but "
                                    f"{_clean_phrase(head, top)}, beyond the tolerance.", False))
    elif len(others) > 1:  # the column's runner-up: what the best mark tests the leader against
        second = sorted(others, key=lambda r: (-head.mean.loc[r, metric], r))[1]
        p = head.lead.loc[lead, metric] if head.lead is not None else float("nan")
        if head.best.loc[lead, metric]:
            verdict = f"is significant ({p_text(float(p), True)}, paired test on the same images, Holm)"
        elif math.isfinite(p):
            verdict = "is within the noise (n.s., paired test on the same images, Holm)"
        else:
            verdict = "is untested (no per-sample data)"
        second_value = format_number(head.mean.loc[second, metric], _col(head, metric))
        out.append(_sentence(where, f"the lead of {label[lead]} over {label[second]} ({second_value} {title}) "
                                    f"{verdict}."))

    name = f"Δ {metric}"
    if name in head.mean and head.tested.loc[others, name].any():
        up = [r for r in others if head.significant.loc[r, name] and head.mean.loc[r, name] > 0]
        down = [r for r in up if DELTA_CLEAN in head.mean and head.significant.loc[r, DELTA_CLEAN]
                and head.mean.loc[r, DELTA_CLEAN] < 0]
        out.append(_sentence(where, f"{len(up)} of {len(others)} correctors improve {title} significantly against "
                                    f"none (Holm over the headline's changes); {len(down)} of them "
                                    f"{'loses' if len(down) == 1 else 'lose'} clean accuracy significantly."))

    attacks = [c for c in head.columns if c.title and c.title != c.name and c.title == attack_label(c.name)]
    if attacks:
        a = attacks[0].name
        rows = [r for r in others if math.isfinite(head.mean.loc[r, a])]
        if rows:
            best = max(rows, key=lambda r: (head.mean.loc[r, a], -r))
            text = f"under {_title(head, a)}, {label[best]} holds {_value(head, best, a)}"
            if refs and math.isfinite(head.mean.loc[refs[0], a]):
                text += f" against {format_number(head.mean.loc[refs[0], a], attacks[0])} for none"
            if switched_attacks:
                text += " (switched models: worst case over the attack strategies)"
            out.append(_sentence(where, text + "."))
    return out
