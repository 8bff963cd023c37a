"""hand2world.server: live app (FastAPI + WebRTC); built in a later issue."""
