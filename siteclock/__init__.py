"""siteclock: badge terminals and gateway for the NSSO Check In and Out at Work service.

The packages beside this one hold the roles (``terminal``, ``gateway``, ``provisioning``,
``hw``); this one holds what they share: the wire contract (:mod:`siteclock.protocol`),
configuration loading, logging and the ``siteclock`` command.
"""

__version__ = "0.1.0"
