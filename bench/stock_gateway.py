"""The gateway on uvicorn's stock httptools protocol (no edge): the benchmark's baseline
for what the edge protocol costs. `python -m bench.stock_gateway --port N`."""

from fleetline.serve import serve
from gateway.app import create_app

serve("gateway", create_app)
