"""hand2world.server: the live app (FastAPI, aiortc WebRTC, WebSocket, sessions, kiosk); docs/server.md."""
