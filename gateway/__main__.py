from gateway.app import create_app
from fleetline.serve import serve

serve("gateway", create_app)
