from lstmlab.cli import app

app(prog_name="lstmlab")
