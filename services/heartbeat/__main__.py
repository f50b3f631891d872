from services.heartbeat.app import MIGRATIONS, SCHEMA, create_app
from shared.serve import main

main("heartbeat", create_app, schema=SCHEMA, migrations=MIGRATIONS)
