def run() -> dict:
    return {}
