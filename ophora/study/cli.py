"""`python -m ophora study create|check|import|add-rater|reissue-code|status|verify|export|report|scores|mrmc|plan`.

Defaults keep a study together: the database is ``studies/<slug>.db`` and blinded clips go to
``studies/runs/<slug>/blinded`` unless ``--db`` (a path or a PostgreSQL URL) and ``--blind-dir`` say otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ophora.files import owner_only
from ophora.study.definition import StudyDefinitionError, load_definition

STUDIES_DIR = Path("studies")


def _slug_and_db(args) -> tuple[str, str]:
    """``STUDY`` may be a study file or a slug; ``--db`` defaults to ``studies/<slug>.db``."""
    target = args.study
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        slug = load_definition(target, check_paths=False).slug
    else:
        slug = target
    return slug, args.db or str(STUDIES_DIR / f"{slug}.db")


def _open(db: str, *, create: bool = False):
    """The study database; only ``create`` makes a new one (status, export and report never do)."""
    from ophora.study.store import StudyStore

    return StudyStore(db, create=create)


def cmd_create(args) -> int:
    definition = load_definition(args.study)
    db = args.db or str(STUDIES_DIR / f"{definition.slug}.db")
    blind_dir = args.blind_dir or str(STUDIES_DIR / "runs" / definition.slug / "blinded")
    with _open(db, create=True) as store:
        codes = store.create_study(definition, blind_dir=blind_dir)
    print(f"created study {definition.slug!r} in {db} (blinded clips will go to {blind_dir})")
    _write_codes(codes, args.codes_out)
    print(f"next: python -m ophora study import {args.study}" + (f" --db {args.db}" if args.db else ""))
    return 0


def _write_codes(codes: dict[str, str], out: str | None) -> None:
    if not codes:
        return
    lines = [f"{name}\t{code}" for name, code in codes.items()]
    if out:
        owner_only(out).write_text("rater\taccess_code\n" + "\n".join(lines) + "\n")
        print(f"access codes written to {out} (only their hashes are stored; hand each rater their own)")
    else:
        print("access codes (shown once; only their hashes are stored):")
        print("\n".join("  " + line for line in lines))


def cmd_import(args) -> int:
    definition = load_definition(args.study)
    db = args.db or str(STUDIES_DIR / f"{definition.slug}.db")
    clips = definition.clips()
    from tqdm import tqdm

    with _open(db) as store, tqdm(total=len(clips), desc="blinding clips", unit="clip") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        added = store.import_clips(definition.slug, clips, blind_dir=args.blind_dir,
                                   accept_differences=args.accept_difference, progress=progress)
        total = len(store.clips_frame(definition.slug))
        waivers = store.accepted_differences(definition.slug)
    print(f"imported {added} new clip(s) ({len(clips) - added} already present); the study has {total} clip(s)")
    _print_waivers(waivers)
    return 0


def _print_waivers(waivers: list[dict]) -> None:
    if waivers:
        print("accepted blinding differences (printed in every report):")
        for w in waivers:
            print(f"  - {w['detail']} (accepted by {w['actor']} at {w['at']})")


def cmd_check(args) -> int:
    """Parity table of a study file's clip sets, without importing (exit 1 when raters could tell)."""
    definition = load_definition(args.study)
    from ophora.study.parity import check_parity

    try:
        report = check_parity(definition, definition.clips(), accept=args.accept_difference)
    except ValueError as exc:
        raise StudyDefinitionError(str(exc)) from None
    print(report.message)
    return 0 if report.ok else 1


def cmd_add_rater(args) -> int:
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        code = store.add_rater(slug, args.name)
    _write_codes({args.name: code}, args.codes_out)
    return 0


def cmd_reissue_code(args) -> int:
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        code = store.reissue_code(slug, args.name)
    print(f"new access code for {args.name!r} (the old one no longer works; ratings are kept)")
    _write_codes({args.name: code}, args.codes_out)
    return 0


def cmd_open(args) -> int:
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        store.open_study(slug)
    print(f"study {slug!r} is open: raters can sign in with their codes")
    return 0


def cmd_lock(args) -> int:
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        store.lock_study(slug, reason=args.reason)
    print(f"study {slug!r} is locked: no rating can be added or changed (the lock is in the audit log)")
    return 0


def cmd_delete(args) -> int:
    slug, db = _slug_and_db(args)
    if not args.yes:
        raise StudyDefinitionError(f"deleting study {slug!r} removes its clips, raters and blinded files; "
                                   f"add --yes to confirm")
    with _open(db) as store:
        removed = store.delete_study(slug)
    print(f"deleted draft study {slug!r} and {removed} blinded file(s)")
    return 0


def cmd_remove_clip(args) -> int:
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        store.remove_clip(slug, args.clip_id, reason=args.reason)
    print(f"removed clip {args.clip_id} from {slug!r} (audited)")
    return 0


def cmd_relabel_clip(args) -> int:
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        record = store.relabel_clip(slug, args.clip_id, reason=args.reason, clip_set=args.clip_set,
                                    source=args.source, model=args.model, phase=args.phase,
                                    instruction=args.instruction)
    print(f"relabelled clip {args.clip_id}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "clip_id"))
    return 0


def cmd_key(args) -> int:
    """The unblinding key (admin only): written with mode 600, never printed."""
    slug, db = _slug_and_db(args)
    out = Path(args.out or STUDIES_DIR / "runs" / slug / f"{slug}-clip-key.csv")
    with _open(db) as store:
        key = store.clips_frame(slug)
    key.to_csv(owner_only(out), index=False)
    print(f"clip key ({len(key)} clips, admin only: it unblinds the study) written to {out}")
    return 0


def cmd_status(args) -> int:
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        progress = store.progress(slug)
        clips = store.clips_frame(slug)
        status = store.status(slug)
    print(f"study {slug!r} ({status}): {len(clips)} clip(s), {len(progress)} rater(s)")
    if not clips.empty:
        print(clips.groupby(["source", "model"]).size().rename("clips").to_string())
        waivers = store.accepted_differences(slug)
    for p in progress:
        if p.finished:
            state = "finished"
        elif p.next_position is None and p.waiting:
            state = (f"{p.waiting} repeat(s) in washout until {p.unlocks_at:%Y-%m-%d %H:%M} UTC" if p.unlocks_at
                     else f"{p.waiting} repeat(s) in washout")
        else:
            state = f"next item {p.next_position}" + (f", {p.waiting} repeat(s) in washout" if p.waiting else "")
        print(f"  {p.rater:<24} {p.done:>5}/{p.total:<5} {state}")
    _print_waivers(waivers)
    return 0


RED, RESET = "\033[31m", "\033[0m"


def _verified(store, slug: str, force: bool):
    """Check the study's record before any result is made from it: print "record verified: N rows, chain
    head H"; on a difference refuse, or with ``--force`` go on under a red warning."""
    verification = store.verify_record(slug)
    if verification.ok:
        print(verification.line)
        return verification
    if not force:
        from ophora.study.store import StudyError

        raise StudyError(f"{verification.line}. See every difference with `python -m ophora study verify {slug}`; "
                         f"add --force to make results anyway (they will carry the failed check)")
    print(f"{RED}WARNING: {verification.line}; results made anyway (--force) carry this warning{RESET}",
          file=sys.stderr)
    return verification


def cmd_verify(args) -> int:
    """Recompute the study's hash chain and row counts; exit 1 naming the first row that differs."""
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        verification = store.verify_record(slug)
    counts = ", ".join(f"{table} {n}" for table, n in verification.rows.items())
    if verification.ok:
        print(f"{verification.line} ({counts}; {verification.links} links)")
        return 0
    print(f"{RED}record of study {slug!r} does not match its chain ({counts}; {verification.links} links):{RESET}",
          file=sys.stderr)
    for problem in verification.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1


def cmd_export(args) -> int:
    from ophora.study import analysis

    slug, db = _slug_and_db(args)
    out = Path(args.out or STUDIES_DIR / "runs" / slug / "export")
    with _open(db) as store:
        verification = _verified(store, slug, args.force)
        results = analysis.results_for_study(store, slug, verification)
        clips = store.clips_frame(slug)
    written = []
    if "csv" in args.formats:
        written += analysis.export_csv(results, out)
        clips.to_csv(owner_only(out / "clips_unblinded.csv"), index=False)
        written.append(out / "clips_unblinded.csv")
    if "xlsx" in args.formats:
        written.append(analysis.export_excel(results, out / f"{slug}.xlsx"))
    if "html" in args.formats:
        written.append(analysis.export_html(results, out / f"{slug}-report.html"))
    for path in written:
        print(path)
    for w in results.accepted_differences:
        print(f"accepted blinding difference: {w}")
    return 0


def cmd_report(args) -> int:
    from ophora.study import analysis

    slug, db = _slug_and_db(args)
    out = Path(args.out or STUDIES_DIR / "runs" / slug / f"{slug}-report.html")
    with _open(db) as store:
        verification = _verified(store, slug, args.force)
        results = analysis.results_for_study(store, slug, verification)
    analysis.export_html(results, out)
    print(results.by_model_criterion.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for w in results.accepted_differences:
        print(f"accepted blinding difference: {w}")
    print(f"report written to {out}")
    return 0


def _read_csv(path: str):
    """A ratings CSV gathered anywhere (e.g. a REDCap export); ``ValueError`` with the path if unreadable."""
    import pandas as pd

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None


def _write_json(data: dict, out: str | None) -> None:
    import json

    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"written to {out}")


def _verify_source(args) -> dict:
    """``--study``: the ratings CSV came from this study; check its record first (as report and export do)
    and return what goes into the JSON output."""
    if not args.study:
        return {}
    slug, db = _slug_and_db(args)
    with _open(db) as store:
        verification = _verified(store, slug, args.force)
    return {"record": {"study": slug, "verified": verification.ok, "rows": verification.total_rows,
                       "chain_head": verification.head}}


def cmd_scores(args) -> int:
    from ophora.study import analysis
    from ophora.study.mrmc import json_records

    record = _verify_source(args)
    frame = _read_csv(args.ratings)
    summary = analysis.score_summary(frame, by_phase=args.by_phase)
    differences = analysis.score_differences(frame)
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    print("Mean scores, 95% generalized CI with raters and clips as crossed random effects (cut at the scale "
          "when the CSV has scale_min / scale_max columns; se and Satterthwaite df for reference):")
    print(summary.drop(columns=["note"]).to_string(index=False, float_format=fmt))
    for note in summary["note"][summary["note"] != ""].unique():
        print(f"note: {note}")
    if not differences.empty:
        print("\nDifferences (p_holm: Holm-adjusted over all rows):")
        print(differences.drop(columns=["a", "b"]).to_string(index=False, float_format=fmt))
    _write_json({"scores": json_records(summary), "differences": json_records(differences), **record}, args.json)
    return 0


def cmd_mrmc(args) -> int:
    from ophora.study.mrmc import mrmc_analysis

    record = _verify_source(args)
    result = mrmc_analysis(_read_csv(args.ratings), alpha=1 - args.confidence)
    data = {**result.to_json(args.analysis), **record}
    label = {"rrrc": "random readers, random cases", "frrc": "fixed readers, random cases",
             "rrfc": "random readers, fixed cases"}[args.analysis]
    print(f"Obuchowski-Rockette MRMC ({label}; Hillis ddf, jackknife covariances): "
          f"{len(result.readers)} readers, {result.cases} cases")
    chosen = result.analyses[args.analysis]  # printed from the floats: NaN (not estimable) is not infinity
    for m in chosen.modalities:
        interval = (f"{args.confidence:.0%} CI {_num(m.ci_low)} to {_num(m.ci_high)} on the logit scale; "
                    f"AUC scale (as OR-DBM MRMC / RJafroc) {_num(m.wald_low)} to {_num(m.wald_high)}"
                    if not m.note else f"no interval: {m.note}")
        print(f"  {m.modality}: AUC {m.auc:.4f} (SE {_num(m.se)}, df {_num(m.df, 2)}, {interval})")
    if math.isfinite(chosen.ndf):
        if math.isnan(chosen.f):
            print("  no F test: the design is too small to test (see above)")
        else:
            print(f"  F = {chosen.f:.4f}, ndf {chosen.ndf:.0f}, ddf {_num(chosen.ddf, 2)}, p = {_num(chosen.p)}")
    for d in chosen.differences:
        if math.isnan(d.ci_low) and math.isnan(d.p):
            print(f"  {d.a} - {d.b}: {d.estimate:.5f} (no interval and no test: the design is too small)")
            continue
        print(f"  {d.a} - {d.b}: {d.estimate:.5f} (SE {_num(d.se, 5)}, CI {_num(d.ci_low, 5)} to "
              f"{_num(d.ci_high, 5)}, p = {_num(d.p)})")
    print("  variance components: " + ", ".join(f"{k} {_num(v, 8)}" for k, v in data["variance_components"].items()))
    _write_json(data, args.json)
    return 0


def cmd_plan(args) -> int:
    from ophora.study.planning import make_plan

    score_pilot = _read_csv(args.scores) if args.scores else None
    mrmc_pilot = _read_csv(args.mrmc) if args.mrmc else None
    if args.study:
        from ophora.study.analysis import turing_mrmc

        slug, db = _slug_and_db(args)
        with _open(db) as store:
            ratings = store.ratings_frame(slug)
        score_pilot = ratings if score_pilot is None else score_pilot
        if mrmc_pilot is None:
            mrmc_pilot = turing_mrmc(ratings)[0]
            mrmc_pilot = None if mrmc_pilot.empty else mrmc_pilot
    if score_pilot is None and mrmc_pilot is None:
        raise ValueError("give a pilot: a study (STUDY), --scores RATINGS.csv or --mrmc MRMC.csv")
    if mrmc_pilot is not None:
        from ophora.study.mrmc import complete_readers

        mrmc_pilot, dropped = complete_readers(mrmc_pilot) if {"reader", "modality", "case"} <= set(mrmc_pilot) \
            else (mrmc_pilot, [])
        if dropped:
            print(f"pilot AUC components from the readers who rated every case (not: {', '.join(dropped)})")
    plan = make_plan(score_pilot=score_pilot, mrmc_pilot=mrmc_pilot, half_width=args.half_width,
                     auc_difference=args.auc_difference, auc_margin=args.auc_margin,
                     expected_auc=args.expected_auc, power=args.power, alpha=args.alpha)
    print(plan.text.replace("**", ""))
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    if not plan.scores.empty:
        print("\n" + plan.scores.to_string(index=False, float_format=fmt))
    if not plan.auc.empty:
        print("\n" + plan.auc.to_string(index=False, float_format=fmt))
    _write_json(plan.to_json(), args.json)
    return 0


def _num(value, digits: int = 4) -> str:
    """A float for the statistician's printout: "inf" for infinity, "not estimable" for NaN."""
    if value is None or math.isnan(value):
        return "not estimable"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


EXPORT_FORMATS = ("csv", "xlsx", "html")


def _formats(text: str) -> set[str]:
    """``csv,xlsx`` -> {"csv", "xlsx"}; an unknown format is an error, not silently skipped."""
    chosen = {f.strip().lower() for f in text.split(",") if f.strip()}
    unknown = sorted(chosen - set(EXPORT_FORMATS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown export format(s) {unknown or [text]}; choose from "
                                         f"{', '.join(EXPORT_FORMATS)}")
    return chosen


def cmd_demo_clips(args) -> int:
    from tqdm import tqdm

    from ophora.study.demo_clips import PHASES, SETS, render_demo_clips

    with tqdm(total=len(SETS) * len(PHASES), desc="drawing demo clips", unit="clip") as bar:
        made = render_demo_clips(args.folder, progress=lambda done, total: bar.update(done - bar.n))
    print(f"drew {len(made)} stand-in clips under {args.folder} (procedural, not surgical video)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ophora study",
                                     description="Blinded reader studies of real and generated clips.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_: str, study_help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("study", help=study_help)
        p.add_argument("--db", help="database: a SQLite file path or a postgresql:// URL (default studies/<slug>.db)")
        p.set_defaults(func=func)
        return p

    p = add("create", cmd_create, "validate a study file, create the study and its raters, print access codes",
            "study definition file (studies/<name>.yaml)")
    p.add_argument("--blind-dir", help="folder for blinded clips (default studies/runs/<slug>/blinded)")
    p.add_argument("--codes-out", help="write access codes to this file (mode 600) instead of printing them")
    from ophora.study.parity import WAIVABLE

    accept_help = ("accept a difference raters may perceive after blinding (fps, size or aspect; repeatable); "
                   "it is recorded in the study, the audit log and every report")
    p = add("check", cmd_check, "compare the clip sets before blinding: a table of what differs and what to change",
            "study definition file")
    p.add_argument("--accept-difference", action="append", default=[], choices=sorted(WAIVABLE), help=accept_help)
    p = add("import", cmd_import, "blind and import the clip sets (checked for parity first; repeatable)",
            "study definition file")
    p.add_argument("--blind-dir", help="folder for blinded clips (default: the one chosen at create)")
    p.add_argument("--accept-difference", action="append", default=[], choices=sorted(WAIVABLE), help=accept_help)
    p = add("add-rater", cmd_add_rater, "add a rater to a running study and print their access code",
            "study file or slug")
    p.add_argument("name")
    p.add_argument("--codes-out")
    p = add("reissue-code", cmd_reissue_code, "give a rater who lost their access code a new one (the old one "
            "stops working; ratings are kept)", "study file or slug")
    p.add_argument("name")
    p.add_argument("--codes-out")
    add("open", cmd_open, "open a draft study for rating (after clips and raters are set up)", "study file or slug")
    p = add("lock", cmd_lock, "lock a study before analysis: ratings are refused afterwards", "study file or slug")
    p.add_argument("--reason", help="why (kept in the audit log)")
    p = add("delete", cmd_delete, "delete a draft study with its blinded clips", "study file or slug")
    p.add_argument("--yes", action="store_true", help="confirm")
    p = add("remove-clip", cmd_remove_clip, "remove a clip nobody has rated yet (audited)", "study file or slug")
    p.add_argument("clip_id", help="the clip's opaque id (see `study key`)")
    p.add_argument("--reason", required=True)
    p = add("relabel-clip", cmd_relabel_clip, "correct an unrated clip's set, source, model, phase or instruction "
            "(audited)", "study file or slug")
    p.add_argument("clip_id")
    p.add_argument("--reason", required=True)
    for field in ("clip-set", "source", "model", "phase", "instruction"):
        p.add_argument(f"--{field}")
    p = add("key", cmd_key, "write the clip key (opaque id -> source, model, file; admin only, mode 600)",
            "study file or slug")
    p.add_argument("--out", help="CSV file (default studies/runs/<slug>/<slug>-clip-key.csv)")
    add("status", cmd_status, "clips per source/model and each rater's progress", "study file or slug")
    force_help = "make results even when the record check fails (they carry a red warning)"
    add("verify", cmd_verify, "recompute the study's hash chain and row counts (exit 1 naming the first row that "
        "differs)", "study file or slug")
    p = add("export", cmd_export, "export ratings and results tables (CSV, Excel, HTML)", "study file or slug")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--out", help="output folder (default studies/runs/<slug>/export)")
    p.add_argument("--formats", default="csv,xlsx,html", type=_formats,
                   help="comma-separated subset of " + ",".join(EXPORT_FORMATS))
    p = add("report", cmd_report, "write the self-contained HTML report and print the score table",
            "study file or slug")
    p.add_argument("--out", help="HTML file (default studies/runs/<slug>/<slug>-report.html)")
    p.add_argument("--force", action="store_true", help=force_help)

    p = sub.add_parser("scores", help="mean scores with crossed random effects from any ratings CSV",
                       description="Mean score per model x criterion (raters and clips random) and model - real / "
                                   "model - model differences with Holm-adjusted p, from a CSV with columns rater, "
                                   "clip, model, criterion, score (optional phase, reading), e.g. a REDCap export.")
    p.add_argument("ratings", help="CSV file, one row per score")
    p.add_argument("--by-phase", action="store_true", help="one row per model x phase x criterion")
    p.add_argument("--study", help="the study file or slug the CSV came from: its record is verified first")
    p.add_argument("--db", help="database of --study (default studies/<slug>.db)")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--json", help="also write the tables to this JSON file")
    p.set_defaults(func=cmd_scores)
    p = sub.add_parser("mrmc", help="Obuchowski-Rockette MRMC ROC analysis of any reader x case ratings CSV",
                       description="Reader-averaged AUC per modality with OR intervals (Hillis ddf, jackknife "
                                   "covariances), F test and differences, from a CSV with columns reader, modality, "
                                   "case, truth (1 = positive), rating. JSON: infinite df are written as null.")
    p.add_argument("ratings", help="CSV file, one row per reader x modality x case")
    p.add_argument("--analysis", choices=["rrrc", "frrc", "rrfc"], default="rrrc",
                   help="readers and cases random (default), fixed readers, or fixed cases")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--study", help="the study file or slug the CSV came from: its record is verified first")
    p.add_argument("--db", help="database of --study (default studies/<slug>.db)")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=cmd_mrmc)
    p = sub.add_parser("plan", help="raters x clips needed, from pilot variance components",
                       description="Sample size from a pilot: raters x clips for a target CI half-width on mean "
                                   "scores; readers x clips for a given power to detect an AUC difference between "
                                   "models or to show an AUC below 0.5 + margin (Obuchowski-Rockette, Hillis, "
                                   "Obuchowski & Berbaum 2008). Pilot: a study, a score CSV and/or an MRMC CSV.")
    p.add_argument("study", nargs="?", help="pilot study file or slug (optional with --scores / --mrmc)")
    p.add_argument("--db", help="database of the pilot study (default studies/<slug>.db)")
    p.add_argument("--scores", help="pilot score CSV: rater, clip, model, criterion, score")
    p.add_argument("--mrmc", help="pilot MRMC CSV: reader, modality, case, truth, rating")
    p.add_argument("--half-width", type=float, default=0.25, help="target 95%% CI half-width of a mean score")
    p.add_argument("--auc-difference", type=float, default=0.05, help="AUC difference between models to detect")
    p.add_argument("--auc-margin", type=float, default=None,
                   help="show a model's AUC below 0.5 + this margin (raters cannot tell)")
    p.add_argument("--expected-auc", type=float, default=0.5, help="the model's true AUC assumed for --auc-margin")
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--json", help="also write the plan tables to this JSON file")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("demo-clips", help="draw the example study's stand-in clips (procedural, redistributable)")
    p.add_argument("folder", nargs="?", default=str(STUDIES_DIR / "example_clips"))
    p.set_defaults(func=cmd_demo_clips)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ophora.study.store import StudyError

    try:
        return int(args.func(args) or 0)
    except (StudyDefinitionError, StudyError, RuntimeError) as exc:  # RuntimeError: ffmpeg could not blind a clip
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a ratings CSV that cannot be analysed (missing columns, text scores, ...)
        if args.func not in (cmd_scores, cmd_mrmc, cmd_plan):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
