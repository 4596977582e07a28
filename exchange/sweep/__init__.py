"""Parameter sweeps for analysts (``wattmesh sweep``): a spec (``spec``) names a target
(``targets``) and a grid or a random sample of its parameters; ``runner`` runs the points
on local worker processes or as Ray tasks; ``store`` keeps each finished point in the
output folder, so a sweep resumes; ``table`` merges them into one Parquet table."""
