from services.auth.app import create_app
from fleetline.serve import serve

serve("auth", create_app)
