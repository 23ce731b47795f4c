from fleetline.serve import serve
from services.auth.app import create_app

serve("auth", create_app)
