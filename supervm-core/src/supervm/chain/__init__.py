"""Blocks of transactions: parallel execution, ownership, headers and crash-safe commits."""

from supervm.chain.block import Block, BlockResult, Execution, ExecutionStats, Transaction
from supervm.chain.chain import (
    GENESIS,
    Chain,
    ChainError,
    Head,
    RevertReport,
)
from supervm.chain.executor import BlockExecutor
from supervm.chain.header import BlockHeader
from supervm.chain.history import HeightView, PrunedHeightError, PruneReport
from supervm.chain.incomplete import IncompleteStoreError
from supervm.chain.ownership import OwnershipRegistry
from supervm.chain.proofs import StateProof

__all__ = [
    "GENESIS",
    "Block",
    "BlockExecutor",
    "BlockHeader",
    "BlockResult",
    "Chain",
    "ChainError",
    "Execution",
    "ExecutionStats",
    "Head",
    "HeightView",
    "IncompleteStoreError",
    "OwnershipRegistry",
    "PruneReport",
    "PrunedHeightError",
    "RevertReport",
    "StateProof",
    "Transaction",
]
