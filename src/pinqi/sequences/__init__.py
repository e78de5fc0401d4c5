"""MR sequences (Pulseq) for the acquisitions pinqi reconstructs."""
