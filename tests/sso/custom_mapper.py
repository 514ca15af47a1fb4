"""A custom OIDC mapping provider with Synapse's method names (used by the tests)."""


class UpperMapper:
    def __init__(self, parsed_config, module_api=None):
        self.prefix = parsed_config["prefix"]

    @staticmethod
    def parse_config(config):
        if "prefix" not in config:
            raise ValueError("prefix is required")
        return {"prefix": config["prefix"]}

    def get_remote_user_id(self, userinfo):
        return userinfo["id"]

    async def map_user_attributes(self, userinfo, token, failures):
        return {"localpart": self.prefix + userinfo["login"].lower() + (str(failures) if failures else ""),
                "display_name": userinfo["login"].upper()}

    async def get_extra_attributes(self, userinfo, token):
        return {"team": userinfo.get("team")}
