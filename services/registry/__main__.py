from services.registry.app import MIGRATIONS, SCHEMA, create_app
from shared.serve import main

main("registry", create_app, schema=SCHEMA, migrations=MIGRATIONS)
