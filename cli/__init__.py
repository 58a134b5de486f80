"""The inflor-deploy command line (installed as the package `inflor_deploy_cli`)."""
