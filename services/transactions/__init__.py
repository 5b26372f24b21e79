"""Transactions: the ITMO ledger of serial blocks, every IR action, checks, approvals and the journal."""
