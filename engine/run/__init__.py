"""The run layer: one CompareRequest, the scheduler that serves its runs, compare, rerun, export."""
