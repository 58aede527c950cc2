//! Ingest, seal, audit, verify, restore and plan, written once against the ports.
