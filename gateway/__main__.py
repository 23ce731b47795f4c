from fleetline.serve import serve
from gateway.app import create_app, edge_options

serve("gateway", create_app, options=edge_options)
