from services.device_gateway.app import create_app
from shared.serve import main

main("device-gateway", create_app)
