from services.auth.app import create_app
from services.common.serve import serve

serve("auth", create_app)
