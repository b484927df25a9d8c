"""`facelens gallery …`, `enroll`, `enroll-folder`, `identify`: thin shells over
facelens.gallery.service.Galleries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.common import (
    FAR_MAX,
    FAR_MIN,
    JsonFlag,
    emit,
    err,
    errors,
    out,
    progress,
    require_folder,
)

if TYPE_CHECKING:
    from facelens.gallery.service import ConsentRecord, Galleries
    from facelens.store.audit import AuditLog

gallery_app = typer.Typer(no_args_is_help=True, help="Create, list, inspect and purge galleries.")

Consent = Annotated[str, typer.Option(
    help="Lawful basis: consent, contract, legal-obligation, vital-interest, public-task, "
         "legitimate-interest.")]
RecordedBy = Annotated[str, typer.Option(help="Who recorded the consent.")]
ConsentDays = Annotated[int | None, typer.Option(help="Consent expires after N days.", min=1)]


def _galleries() -> Galleries:
    """Imported on use: detect/verify need not load the database stack."""
    from facelens.gallery.service import Galleries
    from facelens.settings import get_settings

    return Galleries(get_settings())


def _audit(galleries: Galleries, action: str, outcome: str, **fields: Any) -> None:
    """One row in the same audit chain the service writes: every biometric action is
    audited whatever the entry point (actor "cli")."""
    _audit_log(galleries).record("cli", action, outcome, **fields)


def _audit_log(galleries: Galleries) -> AuditLog:
    from facelens.store.audit import AuditLog

    return AuditLog.of(galleries.store)


def _refused(galleries: Galleries, action: str, e: Exception, **fields: Any) -> None:
    _audit(galleries, action, "refused", reason=str(e)[:200], **fields)


def _consent(basis: str, purpose: str, recorded_by: str, days: int | None) -> ConsentRecord:
    from facelens.gallery.service import ConsentRecord

    expires = datetime.now(UTC) + timedelta(days=days) if days else None
    return ConsentRecord(purpose=purpose, legal_basis=basis, recorded_by=recorded_by,
                         expires_at=expires)


@gallery_app.command("create")
def create(name: str, purpose: Annotated[str, typer.Option(help="e.g. staff-door")],
           embedder: Annotated[str | None, typer.Option(help="Default: settings.")] = None,
           retention_days: Annotated[int, typer.Option(
               help="Subjects not seen for this long are purged.", min=1, max=36_500)] = 3 * 365,
           as_json: JsonFlag = False) -> None:
    """Create a gallery."""
    with errors():
        galleries = _galleries()
        g = galleries.create_gallery(name, purpose, embedder=embedder,
                                     retention_days=retention_days)
        _audit(galleries, "gallery.create", "ok", gallery=g.name, purpose=purpose)
    emit({"name": g.name, "purpose": g.purpose, "embedder": g.embedder}) if as_json else \
        out.print(f"created gallery {g.name} ({escape(g.purpose)}, {g.embedder})")


@gallery_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """List galleries with their subject counts."""
    with errors():
        rows = _galleries().list_galleries()
    if as_json:
        emit([{"name": g.name, "purpose": g.purpose, "embedder": g.embedder, "subjects": n}
              for g, n in rows])
        return
    table = Table("gallery", "purpose", "embedder", "subjects", "retention (days)")
    for g, n in rows:
        table.add_row(g.name, escape(g.purpose), g.embedder, str(n), str(g.retention_days))
    out.print(table)


@gallery_app.command("show")
def show(name: str, as_json: JsonFlag = False) -> None:
    """Subjects of a gallery with their templates, consent and expiry."""
    with errors():
        subjects = _galleries().subjects(name)
    rows = [{"id": s.id, "name": s.display_name, "templates": len(s.templates),
             "legal_basis": ", ".join(c.legal_basis for c in s.consents),
             "consent_expires": ", ".join(str(c.expires_at or "never") for c in s.consents),
             "watch_expires": str(s.watch_expires or "")} for s in subjects]
    if as_json:
        emit(rows)
        return
    table = Table(*rows[0].keys()) if rows else Table("no subjects")
    for r in rows:
        table.add_row(*(escape(str(v)) for v in r.values()))  # names are anyone's text
    out.print(table)


@gallery_app.command("remove")
def remove(name: str, subject: Annotated[str | None, typer.Option(
               help="Remove only this subject id (else the whole gallery).")] = None) -> None:
    """Delete a subject (crypto-shredded) or a whole gallery."""
    with errors():
        galleries = _galleries()
        if subject:
            galleries.delete_subject(subject, name)
            _audit(galleries, "subject.delete", "ok", gallery=name, subject=subject)
        else:
            galleries.remove_gallery(name)
            _audit(galleries, "gallery.delete", "ok", gallery=name)
    err.print(f"removed {subject or name}", markup=False)


@gallery_app.command("purge")
def purge(as_json: JsonFlag = False) -> None:
    """Apply every retention rule once, as the service does each purge_interval_h: subjects
    whose consent or watchlist entry lapsed or who were not seen within the retention,
    unreviewed alerts and street counts past theirs, lapsed plate entries and rules (with
    their alerts), ended cool-down windows."""
    from facelens.policy.retention import apply_retention

    with errors():
        galleries = _galleries()
        purged = apply_retention(galleries, galleries.settings)
        counts = purged.audit_fields()
        _audit(galleries, "purge", "ok", **counts)
    if as_json:
        emit({"removed": purged.subjects, **counts})
        return
    out.print(f"purged {len(purged.subjects)} subject(s), {purged.expired_events} unreviewed "
              f"alert(s), {purged.expired_counts} street count row(s), "
              f"{purged.expired_plates} hotlisted plate(s), {purged.expired_rules} rule(s), "
              f"{purged.expired_windows} cool-down window(s)")


def _subject_name(name: str) -> str:
    """NAME checked while parsing, before any photo is read (gallery/enrol.subject_name)."""
    from facelens.gallery.enrol import subject_name
    from facelens.gallery.errors import GalleryError

    try:
        return subject_name(name)
    except GalleryError as e:
        raise typer.BadParameter(str(e)) from e


def enroll(gallery: str,
           name: Annotated[str, typer.Argument(callback=_subject_name)],
           images: list[Path], consent: Consent = "consent",
           purpose: Annotated[str, typer.Option(help="Purpose the consent covers.")] = "",
           recorded_by: RecordedBy = "", consent_days: ConsentDays = None,
           external_id: str | None = None,
           watch_reason: Annotated[str | None, typer.Option(help="Watchlists only.")] = None,
           watch_days: Annotated[int | None, typer.Option(help="Watchlists only.", min=1)]
           = None,
           as_json: JsonFlag = False) -> None:
    """Enrol one person from one or more photos (refused without a lawful basis)."""
    with errors():
        galleries = _galleries()
        g = galleries.gallery(gallery)
        try:
            report = galleries.enroll(
                gallery, name, list(images),
                consent=_consent(consent, purpose or g.purpose, recorded_by, consent_days),
                external_id=external_id, watch_reason=watch_reason,
                watch_expires=(datetime.now(UTC) + timedelta(days=watch_days) if watch_days
                               else None))
        except Exception as e:
            _refused(galleries, "enrol", e, gallery=gallery)
            raise
        _audit(galleries, "enrol", "ok", gallery=gallery, subject=report.subject_id,
               templates=report.templates, legal_basis=consent)
    result = {"subject_id": report.subject_id, "name": name, "templates": report.templates,
              "skipped": [{"image": i, "reason": r} for i, r in report.skipped]}
    if as_json:
        emit(result)
        return
    # One line each, however long the path; a name or path is printed as it is, not as markup.
    out.print(f"enrolled {name}: subject {report.subject_id}, {report.templates} template(s)",
              markup=False, highlight=False, soft_wrap=True)
    for image, reason in report.skipped:
        out.print(f"  skipped {image}: {reason}", markup=False, highlight=False, soft_wrap=True)


def enroll_folder(gallery: str, folder: Path, consent: Consent = "consent",
                  recorded_by: RecordedBy = "", consent_days: ConsentDays = None,
                  update: Annotated[bool, typer.Option(
                      "--update", help="Re-enrol people already enrolled from this folder "
                                       "(else they are left as they are).")] = False,
                  as_json: JsonFlag = False) -> None:
    """Enrol every sub-folder of FOLDER as one person (its name = the folder's name, also
    the subject's external id, so a second run after a crash enrols only who is missing).
    Exit 1 if a person could not be enrolled (the report says why), 2 before any work on a
    bad consent record or folder."""
    from facelens.gallery.bulk import enrol_people, people_in_folder

    require_folder(folder)  # a missing path or a file is not "a folder without sub-folders"
    people = people_in_folder(folder)
    if not people:
        err.print(f"error: {folder} has no sub-folders (one per person)")
        raise typer.Exit(2)
    outcomes = []
    with errors():
        galleries = _galleries()
        record = _consent(consent, galleries.gallery(gallery).purpose, recorded_by,
                          consent_days)
        record.check()  # the same for every person: refuse once, not once a person
    with errors(), progress() as start:
        advance = start(f"enrolling into {gallery}", len(people))
        for outcome in enrol_people(galleries, gallery, people, record, update=update,
                                    audit=partial(_audit, galleries)):
            outcomes.append(outcome)
            advance(1)
    enrolled = [{"name": o.name, "subject_id": o.subject_id, "templates": o.templates}
                for o in outcomes if o.status == "enrolled"]
    kept = [o.name for o in outcomes if o.status == "kept"]
    skipped = [{"image": str(folder / o.name), "reason": o.reason or ""} for o in outcomes
               if o.status == "refused"] + [s for o in outcomes for s in o.skipped]
    result = {"enrolled": enrolled, "already_enrolled": kept, "skipped": skipped}
    if as_json:
        emit(result)
    else:
        out.print(f"enrolled {len(enrolled)} of {len(people)} people"
                  + (f" ({len(kept)} already enrolled; --update re-enrols them)" if kept else ""))
        for s in skipped:
            out.print(f"  skipped {s['image']}: {s['reason']}", markup=False,
                      highlight=False)
    if len(enrolled) + len(kept) < len(people):
        raise typer.Exit(1)


def identify(gallery: str, image: Path,
             far: Annotated[float, typer.Option(
                 help="Chance per searched face that someone not enrolled is named.",
                 min=FAR_MIN, max=FAR_MAX)] = 1e-3,
             top_k: Annotated[int, typer.Option(help="Candidates shown per face.", min=1,
                                                max=50)] = 5,
             as_json: JsonFlag = False) -> None:
    """Who is in IMAGE? Each face's best candidate above the open-set threshold with its
    confidence band and score, or unknown. Exit 1 if no face is identified."""
    with errors():
        galleries = _galleries()
        try:
            results = galleries.identify(gallery, image, far=far, top_k=top_k)
        except Exception as e:
            _refused(galleries, "identify", e, gallery=gallery)
            raise
        named = [r.candidates[0].subject_id for r in results if not r.unknown]
        _audit(galleries, "identify", f"{len(named)}/{len(results)} known", gallery=gallery,
               far=far, subjects=named)
    rows = [{"box": [round(float(v)) for v in r.face.box],
             "result": "unknown" if r.unknown else r.candidates[0].name,
             "candidates": [{"subject_id": c.subject_id, "name": c.name, "confidence": c.band,
                             "fpir_at_most": c.fpir, "score": round(c.score, 4)}
                            for c in r.candidates],
             "decision": r.decision} for r in results]
    if as_json:
        emit({"image": str(image), "faces": rows})
    else:
        for r in rows:
            best = r["candidates"][0] if r["candidates"] else None
            shown = f" ({best['confidence']}, score {best['score']:.4f})" if best else ""
            out.print(f"{r['box']}: [bold]{escape(r['result'])}[/bold]{shown}  {r['decision']}",
                      highlight=False)
        if not rows:
            out.print("no face found")
    if not any(not r.unknown for r in results):
        raise typer.Exit(1)
