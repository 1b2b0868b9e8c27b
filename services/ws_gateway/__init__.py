"""aiohttp WebSocket bridge: browsers call actions and receive pushed events."""
