"""What the terminal's display says, in the site's language (``feedback.language``).

Words for the worker, not for the NSSO: "registered", not "validity valid"; a refusal sends the
worker to the employer, who sees the reason on the dashboard. Each line fits the 21 characters
of a 128-pixel display. Belgian sites speak Dutch, French or German; English is the default.

Example::

    words("nl").direction(Kind.OUT)   # "UIT"
"""

from __future__ import annotations

from dataclasses import dataclass

from siteclock.protocol import Kind


@dataclass(frozen=True, slots=True)
class Words:
    came_in: str
    went_out: str
    on_break: str
    back_from_break: str
    saved: str
    already_saved: str
    badge_unknown: str
    badge_blocked: str
    see_employer: str
    not_saved: str
    use_paper: str
    reader_fault: str
    ready: str
    last_registered: str
    last_rejected: str
    out_of_service: str = "OUT OF SERVICE"
    use_other_terminal: str = "use other terminal"

    def direction(self, kind: Kind | None) -> str:
        """IN / OUT / BREAK as the worker reads it; empty when nothing was recorded."""
        if kind is None:
            return ""
        return {
            Kind.IN: self.came_in,
            Kind.OUT: self.went_out,
            Kind.BREAK_START: self.on_break,
            Kind.BREAK_END: self.came_in,
        }[kind]


LANGUAGES: dict[str, Words] = {
    "en": Words(
        came_in="IN", went_out="OUT", on_break="BREAK", back_from_break="break over",
        saved="saved", already_saved="Already saved", badge_unknown="badge not yet known",
        badge_blocked="badge blocked:", see_employer="see employer", not_saved="NOT SAVED",
        use_paper="use paper sheet", reader_fault="Reader fault", ready="Ready",
        last_registered="last: registered", last_rejected="last: REJECTED",
        out_of_service="OUT OF SERVICE", use_other_terminal="use other terminal",
    ),
    "nl": Words(
        came_in="IN", went_out="UIT", on_break="PAUZE", back_from_break="pauze voorbij",
        saved="opgeslagen", already_saved="Al opgeslagen", badge_unknown="badge nog onbekend",
        badge_blocked="badge geblokkeerd:", see_employer="zie werkgever",
        not_saved="NIET OPGESLAGEN", use_paper="gebruik papieren lijst",
        reader_fault="Lezer defect", ready="Klaar", last_registered="vorige: geregistreerd",
        last_rejected="vorige: GEWEIGERD",
        out_of_service="BUITEN DIENST", use_other_terminal="andere terminal nemen",
    ),
    "fr": Words(
        came_in="ENTRÉE", went_out="SORTIE", on_break="PAUSE", back_from_break="fin de pause",
        saved="enregistré", already_saved="Déjà enregistré", badge_unknown="badge pas connu",
        badge_blocked="badge bloqué :", see_employer="voir l'employeur",
        not_saved="PAS ENREGISTRÉ", use_paper="utilisez la feuille",
        reader_fault="Lecteur en panne", ready="Prêt",
        last_registered="dernier : enregistré", last_rejected="dernier : REFUSÉ",
        out_of_service="HORS SERVICE", use_other_terminal="autre borne SVP",
    ),
    "de": Words(
        came_in="KOMMEN", went_out="GEHEN", on_break="PAUSE", back_from_break="Pause vorbei",
        saved="gespeichert", already_saved="Schon gespeichert", badge_unknown="Badge unbekannt",
        badge_blocked="Badge gesperrt:", see_employer="Arbeitgeber fragen",
        not_saved="NICHT GESPEICHERT", use_paper="Papierliste nutzen", reader_fault="Leserfehler",
        ready="Bereit", last_registered="letzte: registriert", last_rejected="letzte: ABGELEHNT",
        out_of_service="AUSSER BETRIEB", use_other_terminal="anderes Gerät nutzen",
    ),
}  # fmt: skip


def words(language: str) -> Words:
    """The words of ``language`` (``en``, ``nl``, ``fr``, ``de``); a clear error otherwise."""
    try:
        return LANGUAGES[language]
    except KeyError:
        raise ValueError(
            f"language {language!r} is not one of {', '.join(sorted(LANGUAGES))}"
        ) from None
