from gateway.app import create_app
from services.common.serve import serve

serve("gateway", create_app)
