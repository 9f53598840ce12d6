"""Provisioning that runs on the gateway: tokens, broker accounts, enrolment, lifecycle, workers."""
