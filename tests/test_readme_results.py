"""The README's results table against the committed records (results/dsb2018_cpu_compare/).

Every row of the README's results table(s) is recomputed from the run folders with the code of
``tools/compare.py`` (:func:`maskrcnnpp.comparison.tables.collect_model_results` and
:func:`~maskrcnnpp.comparison.tables.summarize_comparison`, the classical row from its own
folder) and compared at the precision the README prints. No number is written here: a row is
found by its config cell (``configs/...yaml`` + N overrides, ``peer:KIND``, or ``-`` for the
classical floor) in the runs' ``compare_run.json``; the seeds are those the row names; the
metric of a column is the one whose title ``COMPARISON_METRICS`` gives it. Only the rows the
README has are checked, so a model added to results/ (a peer) needs no README row.
"""

import decimal
import json
import pathlib
import re

import pytest

from maskrcnnpp.comparison.runs import ModelSpec, TrainingRun
from maskrcnnpp.comparison.tables import (
    BASELINE_KEY,
    COMPARISON_METRICS,
    collect_model_results,
    collect_run,
    summarize_comparison,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RECORDS = REPO / "results" / "dsb2018_cpu_compare"

# column title in the README -> "task/key" of COMPARISON_METRICS; the README says "DSB score"
# where comparison.md says "DSB"
COLUMN_ALIASES = {"DSB score": "DSB"}
METRIC_OF_TITLE = {title: f"{task}/{key}" for task, key, title, _ in COMPARISON_METRICS}
NOT_METRICS = ("model", "seeds", "train min")


def markdown_tables(text):
    """[(line number of the header, header cells, [(line number, cells), ...])] of ``text``."""
    lines = text.splitlines()
    tables, index = [], 0
    while index < len(lines) - 1:
        if lines[index].startswith("|") and re.match(r"^\|[\s:|-]+\|$", lines[index + 1]):
            header = _cells(lines[index])
            rows, row = [], index + 2
            while row < len(lines) and lines[row].startswith("|"):
                rows.append((row + 1, _cells(lines[row])))
                row += 1
            tables.append((index + 1, header, rows))
            index = row
        else:
            index += 1
    return tables


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def results_tables(text):
    """The tables whose columns are a model, its config, its seeds and metrics, each with the
    dataset and image count the text names last before it ("134 `dsb2018_val` images")."""
    found = []
    lines = text.splitlines()
    for line_number, header, rows in markdown_tables(text):
        if header[0] != "model" or not any(h.startswith("config") for h in header):
            continue
        before = "\n".join(lines[: line_number - 1])
        named = re.findall(r"(\d+) `([\w.-]+)` images", before)
        assert named, f"README.md:{line_number}: no 'N `dataset` images' before the results table"
        num_images, dataset = named[-1]
        found.append(
            dict(
                line=line_number,
                header=header,
                rows=rows,
                dataset=dataset,
                num_images=int(num_images),
            )
        )
    return found


def _config_dir(header_cell):
    """``config (`configs/DSB2018/cpu/`)`` -> ``configs/DSB2018/cpu/``."""
    match = re.search(r"`([^`]+/)`", header_cell)
    return match.group(1) if match else ""


def _run_folders():
    """{model folder name: {seed: (record, folder)}} of every run with a compare_run.json."""
    folders = {}
    for record_path in sorted(RECORDS.glob("*/seed*/compare_run.json")):
        folder = record_path.parent
        record = json.loads(record_path.read_text(encoding="utf-8"))
        folders.setdefault(folder.parent.name, {})[int(record["seed"])] = (record, folder)
    return folders


def _parse_seeds(cell):
    if cell == "-":
        return []
    seeds = []
    for part in cell.split(","):
        low, _, high = part.strip().partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def _match_model(label, config_cell, config_dir, folders):
    """The run folder name of a README row, or an error message."""
    if config_cell == "-":
        if not label.lower().startswith(BASELINE_KEY):
            return (
                None,
                f"config '-' is the classical floor's, but the row is not called {BASELINE_KEY}",
            )
        return BASELINE_KEY, None
    match = re.fullmatch(r"`([^`]+)`(?:\s*\+\s*(\d+) overrides?)?", config_cell)
    if not match:
        return None, f"config cell {config_cell!r} is not '`CONFIG`' or '`CONFIG` + N overrides'"
    config, overrides = match.group(1), int(match.group(2) or 0)
    # the row's own words for its overrides: `FUSION concat` is MODEL.NESTED_FPN.FUSION concat
    named = [token.split() for token in re.findall(r"`([A-Z][A-Z0-9_.]* \S+)`", label)]
    candidates = []
    for name, runs in folders.items():
        for record, _ in runs.values():
            wanted = config if config.startswith("peer:") else config_dir + config
            same_config = (
                record["config_file"] == wanted
                if config.startswith("peer:")
                else record["config_file"].replace("\\", "/").endswith("/" + wanted)
            )
            opts = dict(zip(record["opts"][::2], record["opts"][1::2]))
            if (
                same_config
                and len(opts) == overrides
                and all(
                    any((k == key or k.endswith("." + key)) and v == value for k, v in opts.items())
                    for key, value in named
                )
            ):
                candidates.append(name)
                break
    if len(candidates) != 1:
        return None, (
            f"config {config_cell!r} matches the run folders {candidates} under "
            f"{RECORDS.relative_to(REPO)}, not exactly one"
        )
    return candidates[0], None


def _round_half_up(minutes):
    return int(decimal.Decimal(repr(minutes)).quantize(0, rounding=decimal.ROUND_HALF_UP))


def _check_cell(printed, mean, sd):
    """None when ``printed`` ("0.8405 ± 0.0012", "0.7828", "-") shows ``mean`` and ``sd`` at
    its own precision, else the recomputed text."""
    parts = [p.strip() for p in printed.split("±")]
    if parts == ["-"]:
        return None if mean is None else f"{mean!r}"
    if mean is None:
        return "- (no such metric in the records)"
    decimals = [len(p.partition(".")[2]) for p in parts]
    expected = f"{mean:.{decimals[0]}f}"
    if len(parts) == 2:
        expected += " ± " + ("(no sd)" if sd is None else f"{sd:.{decimals[1]}f}")
    elif sd not in (None, 0.0):  # an sd over seeds that the README leaves out
        expected += f" ± {sd:.{decimals[0]}f}"
    return None if expected == printed else expected


def readme_mismatches(text):
    """Every disagreement of ``text``'s results table(s) with the records, as messages, and
    the number of cells compared."""
    problems, compared = [], 0
    tables = results_tables(text)
    if not tables:
        return ["README.md: no results table (a '| model | config ... |' table) found"], 0
    folders = _run_folders()
    for table in tables:
        header, dataset = table["header"], table["dataset"]
        config_column = next(i for i, h in enumerate(header) if h.startswith("config"))
        config_dir = _config_dir(header[config_column])
        metric_columns = {}
        for column, title in enumerate(header):
            if column == config_column or title in NOT_METRICS:
                continue
            metric = METRIC_OF_TITLE.get(COLUMN_ALIASES.get(title, title))
            if metric is None:
                problems.append(
                    f"README.md:{table['line']}: column {title!r} is no metric of "
                    "maskrcnnpp.comparison.tables.COMPARISON_METRICS"
                )
            else:
                metric_columns[column] = metric
        # one model of the comparison per README row
        rows, runs, baseline = [], [], None
        for line, cells in table["rows"]:
            row = dict(zip(header, cells))
            name, error = _match_model(cells[0], cells[config_column], config_dir, folders)
            if error:
                problems.append(f"README.md:{line}: row {cells[0]!r}: {error}")
                continue
            if name in [r[1] for r in rows]:
                problems.append(f"README.md:{line}: row {cells[0]!r} is the model {name!r} again")
                continue
            rows.append((line, name, cells, row))
            if name == BASELINE_KEY:
                baseline = {
                    dataset: dict(
                        collect_run(str(RECORDS / BASELINE_KEY / dataset)), train_seconds=0.0
                    )
                }
                continue
            for seed in _parse_seeds(row["seeds"]):
                if seed not in folders[name]:
                    problems.append(
                        f"README.md:{line}: row {cells[0]!r} names seed {seed}; "
                        f"{RECORDS.relative_to(REPO)}/{name}/seed{seed} has no record"
                    )
                    continue
                record, folder = folders[name][seed]
                model = ModelSpec(name, record["config_file"], tuple(record["opts"]))
                runs.append(TrainingRun(model, seed, str(folder), tuple(record["opts"])))
        if not runs:
            problems.append(f"README.md:{table['line']}: no row of the table has a run record")
            continue
        comparison = summarize_comparison(collect_model_results(runs), (), baseline)
        block = comparison["datasets"].get(dataset)
        if block is None:
            problems.append(
                f"README.md:{table['line']}: the runs are on {list(comparison['datasets'])}, "
                f"the README says {dataset}"
            )
            continue
        if block["num_images"] != table["num_images"]:
            problems.append(
                f"README.md:{table['line']}: the README says {table['num_images']} "
                f"{dataset} images, the records have {block['num_images']}"
            )
        for line, name, cells, row in rows:
            if name not in block["models"]:
                continue  # a seed without a record, reported above
            summary = block["models"][name]
            where = f"README.md:{line}: row {cells[0]!r}"
            for column, metric in metric_columns.items():
                compared += 1
                expected = _check_cell(
                    cells[column], summary["mean"][metric], summary["sd"][metric]
                )
                if expected is not None:
                    problems.append(
                        f"{where}, column {header[column]!r}: README {cells[column]!r}, "
                        f"records {expected!r}"
                    )
            seeds = _parse_seeds(row["seeds"])
            if seeds and str(folders[name][seeds[0]][0]["config_file"]).startswith("peer:"):
                problems += _peer_budget_problems(where, row["train min"], folders[name], seeds)
            else:
                problems += _train_minutes_problems(where, row["train min"], summary)
    return problems, compared


def _peer_budget_problems(where, printed, runs_by_seed, seeds):
    """A peer's ``train min`` is its budget, "N CPU": minutes x cores of CPU time, from each
    seed's peer_state.json (its wall time depends on what else shared the machine)."""
    budgets = set()
    for seed in seeds:
        state = json.loads((runs_by_seed[seed][1] / "peer_state.json").read_text())
        budgets.add(round(state["minutes"] * state["cores"]))
    expected = [f"{budget} CPU" for budget in sorted(budgets)]
    return [] if [printed] == expected else [f"{where}: train min {printed!r}, budget {expected}"]


def _train_minutes_problems(where, printed, summary):
    """``train min`` is "A-B" or "A" whole minutes: A the fastest run (the README counts the
    runs on the faster machine only), B some run of the row's seeds; 0 for the classical row."""
    if summary.get("deterministic"):
        return (
            [] if printed == "0" else [f"{where}: train min {printed!r}, the classical row takes 0"]
        )
    per_run = {s: m for s, m in summary["train_minutes_per_run"].items() if m is not None}
    if not per_run:
        return [] if printed == "-" else [f"{where}: train min {printed!r}, no run has a wall time"]
    rounded = sorted({_round_half_up(m) for m in per_run.values()})
    low, _, high = printed.partition("-")
    try:
        low, high = int(low), int(high or low)
    except ValueError:
        return [f"{where}: train min {printed!r} is not 'A' or 'A-B' minutes"]
    if low != rounded[0] or high not in rounded:
        return [
            f"{where}: train min {printed!r}, the runs took "
            f"{ {s: round(m, 1) for s, m in per_run.items()} } minutes"
        ]
    return []


def test_readme_results_table_matches_the_records():
    problems, compared = readme_mismatches(README.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)
    assert compared >= 10, f"only {compared} cells of the README's results table were compared"


def test_a_changed_readme_number_is_caught():
    """The check is not vacuous: the last digit of one metric cell changed, it names that cell."""
    text = README.read_text(encoding="utf-8")
    table = results_tables(text)[0]
    line, cells = next(
        (line, cells) for line, cells in table["rows"] if re.match(r"^\d+\.\d+ ±", cells[-1])
    )
    old = cells[-1]
    new = old[:-1] + str((int(old[-1]) + 1) % 10)
    lines = text.splitlines()
    lines[line - 1] = lines[line - 1].replace(f"| {old} |", f"| {new} |")
    assert lines[line - 1] != text.splitlines()[line - 1]
    before, _ = readme_mismatches(text)
    after, _ = readme_mismatches("\n".join(lines))
    new_problems = [p for p in after if p not in before]
    assert len(new_problems) == 1 and f"README.md:{line}:" in new_problems[0], after


@pytest.mark.parametrize(
    "printed, mean, sd, ok",
    [
        ("0.8405 ± 0.0012", 0.84054, 0.00123, True),
        ("0.8405 ± 0.0012", 0.84044, 0.00123, False),
        ("0.8405 ± 0.0012", 0.84054, 0.0013, False),
        ("0.7828", 0.78281, 0.0, True),
        ("0.7828", 0.78281, 0.01, False),
        ("-", None, None, True),
        ("-", 0.5, None, False),
        ("42.07 ± 0.73", 42.0699, 0.7301, True),
    ],
)
def test_cells_compare_at_the_printed_precision(printed, mean, sd, ok):
    assert (_check_cell(printed, mean, sd) is None) == ok
