from fleetline.serve import serve
from services.dispatch.app import create_app

serve("dispatch", create_app)
