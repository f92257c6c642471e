import dagster as dg

# One partition per export (composition). Added by the inbox sensor and by `vexport export`.
exports = dg.DynamicPartitionsDefinition(name="exports")
