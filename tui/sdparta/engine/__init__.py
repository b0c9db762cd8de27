"""The call engine: one thread and asyncio loop per call; aiortc's peer connections live here only."""
