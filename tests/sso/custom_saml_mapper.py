"""A custom SAML mapping provider with Synapse's method names (plain, not async), for the tests."""


class EmployeeMapper:
    def __init__(self, parsed_config, module_api):
        self.prefix = parsed_config["prefix"]

    @staticmethod
    def parse_config(config):
        return {"prefix": config.get("prefix", "emp-")}

    @staticmethod
    def get_saml_attributes(config):
        return {"employeeNumber"}, {"displayName"}

    def get_remote_user_id(self, saml_response, client_redirect_url):
        return saml_response.ava["employeeNumber"][0]

    def saml_response_to_user_attributes(self, saml_response, failures, client_redirect_url):
        number = saml_response.ava["employeeNumber"][0]
        return {"mxid_localpart": f"{self.prefix}{number}" + (f"-{failures}" if failures else ""),
                "displayname": "Employee " + number, "emails": []}
