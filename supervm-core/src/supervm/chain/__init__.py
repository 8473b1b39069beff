"""Blocks of transactions: parallel execution, ownership and crash-safe commits."""

from supervm.chain.block import Block, BlockResult, ExecutionStats, Transaction
from supervm.chain.chain import Chain, ChainError
from supervm.chain.executor import BlockExecutor
from supervm.chain.ownership import OwnershipRegistry

__all__ = [
    "Block",
    "BlockExecutor",
    "BlockResult",
    "Chain",
    "ChainError",
    "ExecutionStats",
    "OwnershipRegistry",
    "Transaction",
]
