"""asyncq: an asyncio-native, typed job queue."""
