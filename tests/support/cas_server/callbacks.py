"""CAS attributes released to services: a display name, an email and a group."""


def attributes(user, service):
    return {
        "displayName": user.get_full_name() or user.get_username(),
        "email": user.email,
        "userGroup": "staff" if user.is_staff else "guests",
    }
