"""DynamoDB tables as the AWS-like stack has them."""

from simulation.awslike.sim import later


def install_dynamodb(sim):
    """Tables CREATING, then ACTIVE; DELETING, then gone; items only while not CREATING."""
    from moto.dynamodb.exceptions import DeletionProtectedException, ResourceInUseException, ResourceNotFoundException
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    create_table, describe = DynamoDBBackend.create_table, Table.describe

    def status(table):
        return getattr(table, "sim_status", "ACTIVE")

    def patched_create_table(self, name, *args, **kwargs):
        table = create_table(self, name, *args, **kwargs)  # refuses a name in self.tables: DELETING ones too
        table.sim_status = "CREATING"
        later(sim.t["table_create"], lambda: status(table) == "CREATING" and setattr(table, "sim_status", "ACTIVE"))
        sim.record("CreateTable", [], table=name)
        return table

    def delete_table(self, name):
        table = self.get_table(name)
        if status(table) == "CREATING":
            sim.record("DeleteTable", [], table=name, refused="CREATING")
            raise ResourceInUseException(f"Attempt to change a resource which is still in use: Table is being created: {name}")
        if table.deletion_protection_enabled:
            raise DeletionProtectedException(name)
        if status(table) != "DELETING":
            table.sim_status = "DELETING"
            later(sim.t["table_delete"], lambda: self.tables.get(table.name) is table and self.tables.pop(table.name))
            sim.record("DeleteTable", [], table=name)
        return table

    def described(self, base_key="TableDescription"):
        found = describe(self, base_key)
        found[base_key]["TableStatus"] = status(self)
        return found

    def active_only(method):
        def patched(self, table_name, *args, **kwargs):
            table = self.tables.get(table_name)
            if table is not None and status(table) == "CREATING":
                raise ResourceNotFoundException()
            return method(self, table_name, *args, **kwargs)

        return patched

    DynamoDBBackend.create_table = patched_create_table
    DynamoDBBackend.delete_table = delete_table
    Table.describe = described
    for name in ("get_item", "put_item", "update_item", "delete_item", "query", "scan"):
        setattr(DynamoDBBackend, name, active_only(getattr(DynamoDBBackend, name)))
