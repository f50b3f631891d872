from services.provisioning.app import MIGRATIONS, SCHEMA, create_app
from shared.serve import main

main("provisioning", create_app, schema=SCHEMA, migrations=MIGRATIONS)
