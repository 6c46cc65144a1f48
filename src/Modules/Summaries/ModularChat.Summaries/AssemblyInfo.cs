// Lets the JasperFx command line find the module's commands ("summaries").
[assembly: JasperFx.JasperFxAssembly]
