"""Evidence for a correction request or an inspection: export and offline verification.

:mod:`.export` builds one worker's evidence on a workplace for a period (signed events, the
terminal keys, NSSO ids and verdicts, a verification report); :mod:`.document` seals it as
canonical JSON; :mod:`.check` is the verification report, made at export and remade by
``siteclock evidence verify`` (:mod:`.cli`). docs/evidence.md says what a reader can rely on.
"""
