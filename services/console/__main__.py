from fleetline.serve import serve
from services.console.app import create_app

serve("console", create_app)
