"""Files: generator and task folders, model cards, peft/timm export — on plain data (never a task or adapter object)."""
